"""API keys: create (secret shown once), list, get, rotate with grace, revoke, disable."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query

from lockgate.controlplane.actions import key_summary
from lockgate.controlplane.admin.deps import Caller, Services
from lockgate.controlplane.admin.schemas import ApiKeyCreated, ApiKeyIn, ApiKeyOut, Page, RotateIn
from lockgate.tenancy.model import ApiKeyRecord, KeyStatus
from lockgate.tenancy.rbac import Permission

router = APIRouter(prefix="/admin/v1/organizations/{org_id}")
PageSize = Annotated[int, Query(ge=1, le=500)]


def _out(key: ApiKeyRecord) -> ApiKeyOut:
    return ApiKeyOut.model_validate(key_summary(key))


@router.post("/projects/{project_id}/api_keys", status_code=201)
async def create_api_key(
    org_id: str, project_id: str, body: ApiKeyIn, caller: Caller, svc: Services
) -> ApiKeyCreated:
    caller.require(Permission.KEY_MANAGE, org_id, project_id)
    key, secret = await svc.actions.create_api_key(
        caller.actor,
        organization_id=org_id,
        project_id=project_id,
        name=body.name,
        scopes=body.scopes,
        allowed_models=body.allowed_models,
        allowed_cidrs=body.allowed_cidrs,
        required_model_tags=body.required_model_tags,
        expires_at=body.expires_at,
        service_account_id=body.service_account_id,
    )
    return ApiKeyCreated(**key_summary(key), key=secret)


@router.get("/projects/{project_id}/api_keys")
async def list_api_keys(
    org_id: str,
    project_id: str,
    caller: Caller,
    svc: Services,
    limit: PageSize = 100,
    after: str | None = None,
) -> Page[ApiKeyOut]:
    caller.require(Permission.KEY_READ, org_id, project_id)
    keys = await svc.store.api_keys.list(
        organization_id=org_id, project_id=project_id, limit=limit + 1, after=after
    )
    data = [_out(k) for k in keys[:limit]]
    return Page(data=data, has_more=len(keys) > limit, last_id=data[-1].id if data else None)


async def _key_in_scope(
    org_id: str, key_id: str, permission: Permission, caller: Caller, svc: Services
) -> ApiKeyRecord:
    """The key, if the caller may act on its project; 404 for keys of other tenants."""
    caller.require_any_in(org_id)
    key = await svc.store.api_keys.get(key_id, organization_id=org_id)
    caller.require(permission, org_id, key.project_id)
    return key


@router.get("/api_keys/{key_id}")
async def get_api_key(org_id: str, key_id: str, caller: Caller, svc: Services) -> ApiKeyOut:
    return _out(await _key_in_scope(org_id, key_id, Permission.KEY_READ, caller, svc))


@router.post("/api_keys/{key_id}/rotate")
async def rotate_api_key(
    org_id: str, key_id: str, body: RotateIn, caller: Caller, svc: Services
) -> ApiKeyCreated:
    await _key_in_scope(org_id, key_id, Permission.KEY_MANAGE, caller, svc)
    key, secret = await svc.actions.rotate_api_key(
        caller.actor, organization_id=org_id, key_id=key_id, grace=timedelta(seconds=body.grace_s)
    )
    return ApiKeyCreated(**key_summary(key), key=secret)


async def _set_status(
    org_id: str, key_id: str, status: KeyStatus, caller: Caller, svc: Services
) -> ApiKeyOut:
    await _key_in_scope(org_id, key_id, Permission.KEY_MANAGE, caller, svc)
    key = await svc.actions.set_api_key_status(
        caller.actor, organization_id=org_id, key_id=key_id, status=status
    )
    return _out(key)


@router.post("/api_keys/{key_id}/revoke")
async def revoke_api_key(org_id: str, key_id: str, caller: Caller, svc: Services) -> ApiKeyOut:
    return await _set_status(org_id, key_id, KeyStatus.REVOKED, caller, svc)


@router.post("/api_keys/{key_id}/disable")
async def disable_api_key(org_id: str, key_id: str, caller: Caller, svc: Services) -> ApiKeyOut:
    return await _set_status(org_id, key_id, KeyStatus.DISABLED, caller, svc)


@router.post("/api_keys/{key_id}/enable")
async def enable_api_key(org_id: str, key_id: str, caller: Caller, svc: Services) -> ApiKeyOut:
    return await _set_status(org_id, key_id, KeyStatus.ACTIVE, caller, svc)
