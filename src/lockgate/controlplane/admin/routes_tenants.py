"""Organisations, projects, service accounts and role bindings."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from lockgate.controlplane.admin.deps import Caller, Services
from lockgate.controlplane.admin.schemas import (
    OrganizationIn,
    OrganizationOut,
    Page,
    ProjectIn,
    ProjectOut,
    ProjectPatch,
    RoleBindingIn,
    RoleBindingOut,
    ServiceAccountIn,
    ServiceAccountOut,
)
from lockgate.errors import PermissionDenied
from lockgate.tenancy.model import Role
from lockgate.tenancy.rbac import Permission, can_grant

router = APIRouter(prefix="/admin/v1")
PageSize = Annotated[int, Query(ge=1, le=500)]


def _org(org: object) -> OrganizationOut:
    return OrganizationOut.model_validate(org, from_attributes=True)


@router.post("/organizations", status_code=201)
async def create_organization(
    body: OrganizationIn, caller: Caller, svc: Services
) -> OrganizationOut:
    caller.require(Permission.ORG_CREATE, None)
    return _org(await svc.actions.create_organization(caller.actor, body.name))


@router.get("/organizations")
async def list_organizations(
    caller: Caller, svc: Services, limit: PageSize = 100, after: str | None = None
) -> Page[OrganizationOut]:
    """Superadmins see every organisation; everyone else the ones they hold a role in."""
    if any(g.role is Role.SUPERADMIN for g in caller.grants):
        orgs = list(await svc.store.organizations.list(limit=limit + 1, after=after))
    else:
        ids = sorted({g.organization_id for g in caller.grants if g.organization_id})
        ids = [i for i in ids if after is None or i > after][: limit + 1]
        orgs = [await svc.store.organizations.get(i) for i in ids]
    data = [_org(o) for o in orgs[:limit]]
    return Page(data=data, has_more=len(orgs) > limit, last_id=data[-1].id if data else None)


@router.get("/organizations/{org_id}")
async def get_organization(org_id: str, caller: Caller, svc: Services) -> OrganizationOut:
    caller.require(Permission.ORG_READ, org_id)
    return _org(await svc.store.organizations.get(org_id))


def _project(project: object) -> ProjectOut:
    return ProjectOut.model_validate(project, from_attributes=True)


@router.post("/organizations/{org_id}/projects", status_code=201)
async def create_project(org_id: str, body: ProjectIn, caller: Caller, svc: Services) -> ProjectOut:
    caller.require(Permission.PROJECT_CREATE, org_id)
    project = await svc.actions.create_project(caller.actor, org_id, body.name, body.allowed_models)
    return _project(project)


@router.get("/organizations/{org_id}/projects")
async def list_projects(
    org_id: str, caller: Caller, svc: Services, limit: PageSize = 100, after: str | None = None
) -> Page[ProjectOut]:
    """Projects the caller may read: all for org-wide roles, their own for project roles."""
    caller.require_any_in(org_id)
    projects = await svc.store.projects.list(organization_id=org_id, limit=limit + 1, after=after)
    visible = [
        _project(p)
        for p in projects[:limit]
        if caller.allows(Permission.PROJECT_READ, org_id, p.id)
    ]
    return Page(
        data=visible,
        has_more=len(projects) > limit,
        last_id=projects[min(limit, len(projects)) - 1].id if projects else None,
    )


@router.get("/organizations/{org_id}/projects/{project_id}")
async def get_project(org_id: str, project_id: str, caller: Caller, svc: Services) -> ProjectOut:
    caller.require(Permission.PROJECT_READ, org_id, project_id)
    return _project(await svc.store.projects.get(project_id, organization_id=org_id))


@router.patch("/organizations/{org_id}/projects/{project_id}")
async def update_project(
    org_id: str, project_id: str, body: ProjectPatch, caller: Caller, svc: Services
) -> ProjectOut:
    """Changing ``allowed_models`` applies to the project's keys on every replica at once."""
    caller.require(Permission.PROJECT_UPDATE, org_id, project_id)
    project = await svc.actions.update_project(
        caller.actor, org_id, project_id, name=body.name, allowed_models=body.allowed_models
    )
    return _project(project)


@router.post("/organizations/{org_id}/service_accounts", status_code=201)
async def create_service_account(
    org_id: str, body: ServiceAccountIn, caller: Caller, svc: Services
) -> ServiceAccountOut:
    caller.require(Permission.MEMBER_MANAGE, org_id)
    account = await svc.actions.create_service_account(caller.actor, org_id, body.name)
    return ServiceAccountOut.model_validate(account, from_attributes=True)


@router.post("/organizations/{org_id}/role_bindings", status_code=201)
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


@router.get("/organizations/{org_id}/role_bindings")
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


@router.delete("/organizations/{org_id}/role_bindings/{binding_id}")
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
