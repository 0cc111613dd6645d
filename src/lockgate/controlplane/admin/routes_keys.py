"""API keys: create (secret shown once), list, get, update, rotate with grace, revoke,
disable.

Creating and rotating accept an ``Idempotency-Key`` header: a retry of the
same request by the same caller within 24 hours gets the same answer (the
same secret) and changes nothing; see ``actions.idempotency``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response

from lockgate.controlplane.actions import IdempotentRequest, created_response, key_summary
from lockgate.controlplane.admin.deps import Caller, Services
from lockgate.controlplane.admin.schemas import (
    ApiKeyCreated,
    ApiKeyIn,
    ApiKeyOut,
    ApiKeyPatch,
    Page,
    RotateIn,
)
from lockgate.errors import PermissionDenied
from lockgate.store.repositories.base import UNSET
from lockgate.tenancy.model import ApiKeyRecord, KeyStatus, PrincipalKind, Role
from lockgate.tenancy.rbac import Permission, can_grant

router = APIRouter(prefix="/admin/v1/organizations/{org_id}")
PageSize = Annotated[int, Query(ge=1, le=500)]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Retrying with the same key and body within 24 h replays the first "
        "response (same secret) instead of acting again; another body gets 422.",
    ),
]
REPLAYED_HEADER = "idempotent-replayed"


def _out(key: ApiKeyRecord) -> ApiKeyOut:
    return ApiKeyOut.model_validate(key_summary(key))


def _idempotent(
    caller: Caller, key: str | None, operation: str, body: Mapping[str, Any]
) -> IdempotentRequest | None:
    return None if key is None else IdempotentRequest.of(caller.actor.id, key, operation, body)


async def _check_service_account(
    org_id: str, account_id: str, caller: Caller, svc: Services
) -> None:
    """A key acting for a service account carries its roles: creating one is granting
    them, so it needs what granting them needs (no escalation through keys)."""
    await svc.store.service_accounts.get(account_id, organization_id=org_id)  # 404 elsewhere
    bindings = await svc.store.role_bindings.list_for_subject(
        PrincipalKind.SERVICE_ACCOUNT, account_id, organization_id=None
    )
    for binding in bindings:
        if binding.role is Role.SUPERADMIN:
            allowed = caller.is_superadmin
        else:
            allowed = can_grant(
                caller.grants, binding.role, organization_id=org_id, project_id=binding.project_id
            )
        if not allowed:
            raise PermissionDenied(
                f"The service account holds the role '{binding.role.value}', which you may not "
                "grant: you may not create keys that act for it."
            )


@router.post("/projects/{project_id}/api_keys", status_code=201)
async def create_api_key(
    org_id: str,
    project_id: str,
    body: ApiKeyIn,
    caller: Caller,
    svc: Services,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> ApiKeyCreated:
    """``allowed_models`` must lie within the project's (422 otherwise)."""
    caller.require(Permission.KEY_MANAGE, org_id, project_id)
    if body.service_account_id is not None:
        await _check_service_account(org_id, body.service_account_id, caller, svc)
    operation = f"create_api_key {org_id} {project_id}"
    request = _idempotent(caller, idempotency_key, operation, body.model_dump(mode="json"))

    async def create(claim: IdempotentRequest | None) -> dict[str, Any]:
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
            limits=body.limits,
            metadata=body.metadata,
            idempotency=claim,
        )
        return created_response(key, secret)

    answer, replayed = await svc.actions.once(request, create)
    if replayed:
        response.headers[REPLAYED_HEADER] = "true"
    return ApiKeyCreated.model_validate(answer)


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


@router.patch("/api_keys/{key_id}")
async def update_api_key(
    org_id: str, key_id: str, body: ApiKeyPatch, caller: Caller, svc: Services
) -> ApiKeyOut:
    """Applies on every replica at once. ``allowed_models`` must lie within the
    project's (422 otherwise); ``expires_at: null`` removes the expiry."""
    await _key_in_scope(org_id, key_id, Permission.KEY_MANAGE, caller, svc)
    key = await svc.actions.update_api_key(
        caller.actor,
        organization_id=org_id,
        key_id=key_id,
        name=body.name,
        scopes=body.scopes,
        allowed_models=body.allowed_models,
        allowed_cidrs=body.allowed_cidrs,
        required_model_tags=body.required_model_tags,
        expires_at=body.expires_at if "expires_at" in body.model_fields_set else UNSET,
        metadata=body.metadata,
        limits=body.limits,
    )
    return _out(key)


@router.post("/api_keys/{key_id}/rotate")
async def rotate_api_key(
    org_id: str,
    key_id: str,
    body: RotateIn,
    caller: Caller,
    svc: Services,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> ApiKeyCreated:
    """With an ``Idempotency-Key``, a retried rotation returns the same new secret and
    does not rotate again (which would cut the first new secret's grace short)."""
    await _key_in_scope(org_id, key_id, Permission.KEY_MANAGE, caller, svc)
    operation = f"rotate_api_key {org_id} {key_id}"
    request = _idempotent(caller, idempotency_key, operation, body.model_dump(mode="json"))

    async def rotate(claim: IdempotentRequest | None) -> dict[str, Any]:
        key, secret = await svc.actions.rotate_api_key(
            caller.actor,
            organization_id=org_id,
            key_id=key_id,
            grace=timedelta(seconds=body.grace_s),
            idempotency=claim,
        )
        return created_response(key, secret)

    answer, replayed = await svc.actions.once(request, rotate)
    if replayed:
        response.headers[REPLAYED_HEADER] = "true"
    return ApiKeyCreated.model_validate(answer)


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
