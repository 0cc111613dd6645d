"""Service accounts and role bindings: machine principals and the roles anyone holds.

Service accounts are organisation-level principals: reading them needs
``member.read`` org-wide, changing them ``member.manage`` org-wide (a project
admin's ``member.manage`` covers only bindings on their own project).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from lockgate.controlplane.actions import service_account_summary
from lockgate.controlplane.admin.deps import Caller, Services
from lockgate.controlplane.admin.schemas import (
    DeletedServiceAccountOut,
    Page,
    RoleBindingIn,
    RoleBindingOut,
    ServiceAccountIn,
    ServiceAccountOut,
    ServiceAccountPatch,
)
from lockgate.errors import PermissionDenied
from lockgate.tenancy.model import Role, ServiceAccount
from lockgate.tenancy.rbac import Permission, can_grant

router = APIRouter(prefix="/admin/v1/organizations/{org_id}")
PageSize = Annotated[int, Query(ge=1, le=500)]


def _account(account: ServiceAccount) -> ServiceAccountOut:
    return ServiceAccountOut.model_validate(service_account_summary(account))


@router.post("/service_accounts", status_code=201)
async def create_service_account(
    org_id: str, body: ServiceAccountIn, caller: Caller, svc: Services
) -> ServiceAccountOut:
    caller.require(Permission.MEMBER_MANAGE, org_id)
    account = await svc.actions.create_service_account(caller.actor, org_id, body.name)
    return _account(account)


@router.get("/service_accounts")
async def list_service_accounts(
    org_id: str, caller: Caller, svc: Services, limit: PageSize = 100, after: str | None = None
) -> Page[ServiceAccountOut]:
    caller.require(Permission.MEMBER_READ, org_id)
    accounts = await svc.store.service_accounts.list(
        organization_id=org_id, limit=limit + 1, after=after
    )
    data = [_account(a) for a in accounts[:limit]]
    return Page(data=data, has_more=len(accounts) > limit, last_id=data[-1].id if data else None)


@router.get("/service_accounts/{account_id}")
async def get_service_account(
    org_id: str, account_id: str, caller: Caller, svc: Services
) -> ServiceAccountOut:
    caller.require(Permission.MEMBER_READ, org_id)
    return _account(await svc.store.service_accounts.get(account_id, organization_id=org_id))


@router.patch("/service_accounts/{account_id}")
async def update_service_account(
    org_id: str, account_id: str, body: ServiceAccountPatch, caller: Caller, svc: Services
) -> ServiceAccountOut:
    """``is_disabled: true`` stops every key acting for the account at once: admin calls
    with them get 403, data-plane calls 401 ``api_key_disabled``, on every replica."""
    caller.require(Permission.MEMBER_MANAGE, org_id)
    account = await svc.actions.update_service_account(
        caller.actor, org_id, account_id, name=body.name, is_disabled=body.is_disabled
    )
    return _account(account)


@router.delete("/service_accounts/{account_id}")
async def delete_service_account(
    org_id: str, account_id: str, caller: Caller, svc: Services
) -> DeletedServiceAccountOut:
    """Revokes every key acting for the account (they stay listed, revoked), then deletes
    the account and its role bindings."""
    caller.require(Permission.MEMBER_MANAGE, org_id)
    account, key_ids = await svc.actions.delete_service_account(caller.actor, org_id, account_id)
    return DeletedServiceAccountOut(
        **service_account_summary(account), revoked_api_key_ids=list(key_ids)
    )


@router.post("/role_bindings", status_code=201)
async def create_role_binding(
    org_id: str, body: RoleBindingIn, caller: Caller, svc: Services
) -> RoleBindingOut:
    caller.require_any_in(org_id)
    if not can_grant(caller.grants, body.role, organization_id=org_id, project_id=body.project_id):
        raise PermissionDenied(f"You may not grant the role '{body.role.value}' here.")
    binding = await svc.actions.create_role_binding(
        caller.actor,
        subject_kind=body.subject_kind,
        subject_id=body.subject_id,
        role=body.role,
        organization_id=None if body.role is Role.SUPERADMIN else org_id,
        project_id=body.project_id,
    )
    return RoleBindingOut.model_validate(binding, from_attributes=True)


@router.get("/role_bindings")
async def list_role_bindings(
    org_id: str,
    caller: Caller,
    svc: Services,
    project_id: str | None = None,
    limit: PageSize = 100,
    after: str | None = None,
) -> Page[RoleBindingOut]:
    caller.require(Permission.MEMBER_READ, org_id, project_id)
    bindings = await svc.store.role_bindings.list(
        organization_id=org_id, project_id=project_id, limit=limit + 1, after=after
    )
    data = [RoleBindingOut.model_validate(b, from_attributes=True) for b in bindings[:limit]]
    return Page(data=data, has_more=len(bindings) > limit, last_id=data[-1].id if data else None)


@router.delete("/role_bindings/{binding_id}")
async def delete_role_binding(
    org_id: str, binding_id: str, caller: Caller, svc: Services
) -> RoleBindingOut:
    """Only someone who could grant a role may take it away (no de-escalating superiors)."""
    caller.require_any_in(org_id)
    binding = await svc.store.role_bindings.get(binding_id, organization_id=org_id)
    if not can_grant(
        caller.grants, binding.role, organization_id=org_id, project_id=binding.project_id
    ):
        raise PermissionDenied(f"You may not revoke the role '{binding.role.value}' here.")
    deleted = await svc.actions.delete_role_binding(caller.actor, org_id, binding_id)
    return RoleBindingOut.model_validate(deleted, from_attributes=True)
