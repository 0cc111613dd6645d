"""Organisations and projects.

Policy (model allow-lists and limits) is guarded apart from plain updates:
an organisation's ceiling and limits need ``org.policy`` (superadmin), a
project's need ``project.policy`` (org owners and admins), so nobody raises
their own quota.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from lockgate.admission.spec import NO_LIMITS
from lockgate.controlplane.actions import organization_summary, project_summary
from lockgate.controlplane.admin.deps import Caller, Services
from lockgate.controlplane.admin.schemas import (
    DeletedOrganizationOut,
    DeletedProjectOut,
    OrganizationIn,
    OrganizationOut,
    OrganizationPatch,
    Page,
    ProjectIn,
    ProjectOut,
    ProjectPatch,
)
from lockgate.errors import PermissionDenied
from lockgate.store.errors import NotFound
from lockgate.tenancy.model import Organization, Project
from lockgate.tenancy.rbac import Permission

router = APIRouter(prefix="/admin/v1")
PageSize = Annotated[int, Query(ge=1, le=500)]


def _org(org: Organization) -> OrganizationOut:
    return OrganizationOut.model_validate(organization_summary(org))


def _project(project: Project) -> ProjectOut:
    return ProjectOut.model_validate(project_summary(project))


@router.post("/organizations", status_code=201)
async def create_organization(
    body: OrganizationIn, caller: Caller, svc: Services
) -> OrganizationOut:
    caller.require(Permission.ORG_CREATE, None)
    org = await svc.actions.create_organization(
        caller.actor,
        body.name,
        allowed_models=body.allowed_models,
        limits=body.limits,
        metadata=body.metadata,
    )
    return _org(org)


@router.get("/organizations")
async def list_organizations(
    caller: Caller, svc: Services, limit: PageSize = 100, after: str | None = None
) -> Page[OrganizationOut]:
    """Superadmins see every organisation; everyone else the ones they hold a role in."""
    if caller.is_superadmin:
        orgs = list(await svc.store.organizations.list(limit=limit + 1, after=after))
    else:
        ids = sorted({g.organization_id for g in caller.grants if g.organization_id})
        orgs = []
        for org_id in ids:
            if (after is None or org_id > after) and len(orgs) <= limit:
                try:
                    orgs.append(await svc.store.organizations.get(org_id))
                except NotFound:  # a token's claim naming a deleted organisation
                    continue
    data = [_org(o) for o in orgs[:limit]]
    return Page(data=data, has_more=len(orgs) > limit, last_id=data[-1].id if data else None)


@router.get("/organizations/{org_id}")
async def get_organization(org_id: str, caller: Caller, svc: Services) -> OrganizationOut:
    caller.require(Permission.ORG_READ, org_id)
    return _org(await svc.store.organizations.get(org_id))


@router.patch("/organizations/{org_id}")
async def update_organization(
    org_id: str, body: OrganizationPatch, caller: Caller, svc: Services
) -> OrganizationOut:
    """A new ceiling or limits apply to every key of the organisation, on every replica,
    at once. Narrowing the ceiling below a project's list is allowed: the data plane
    intersects them, so the project keeps only what is in both."""
    caller.require(Permission.ORG_UPDATE, org_id)
    if body.allowed_models is not None or body.limits is not None:
        caller.require(Permission.ORG_POLICY, org_id)
    org = await svc.actions.update_organization(
        caller.actor,
        org_id,
        name=body.name,
        allowed_models=body.allowed_models,
        limits=body.limits,
        metadata=body.metadata,
    )
    return _org(org)


@router.delete("/organizations/{org_id}")
async def delete_organization(
    org_id: str, caller: Caller, svc: Services, force: bool = False
) -> DeletedOrganizationOut:
    """Deletes the organisation with its users, service accounts, role bindings and
    upstream secrets. Refused (409 ``conflict``) while it has projects, unless
    ``force=true`` — superadmins only — which deletes its projects and API keys too."""
    caller.require(Permission.ORG_DELETE, org_id)
    if force and not caller.is_superadmin:
        raise PermissionDenied(
            "Only a superadmin may delete an organization together with its projects and "
            "API keys (force=true); delete the projects first."
        )
    org, removed = await svc.actions.delete_organization(caller.actor, org_id, force=force)
    return DeletedOrganizationOut(
        **organization_summary(org),
        deleted_project_ids=list(removed.project_ids),
        deleted_api_key_ids=list(removed.api_key_ids),
    )


@router.post("/organizations/{org_id}/projects", status_code=201)
async def create_project(org_id: str, body: ProjectIn, caller: Caller, svc: Services) -> ProjectOut:
    """``allowed_models`` must lie within the organisation's (422 otherwise)."""
    caller.require(Permission.PROJECT_CREATE, org_id)
    if body.limits != NO_LIMITS or body.model_limits or body.log_prompts:
        caller.require(Permission.PROJECT_POLICY, org_id)
    project = await svc.actions.create_project(
        caller.actor,
        org_id,
        body.name,
        body.allowed_models,
        limits=body.limits,
        model_limits=body.model_limits,
        log_prompts=body.log_prompts,
    )
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
    """Changes apply to the project's keys on every replica at once. ``allowed_models``
    must lie within the organisation's (422 otherwise)."""
    caller.require(Permission.PROJECT_UPDATE, org_id, project_id)
    policy: tuple[Any, ...] = (
        body.allowed_models,
        body.limits,
        body.model_limits,
        body.log_prompts,
    )
    if any(value is not None for value in policy):
        caller.require(Permission.PROJECT_POLICY, org_id, project_id)
    project = await svc.actions.update_project(
        caller.actor,
        org_id,
        project_id,
        name=body.name,
        allowed_models=body.allowed_models,
        limits=body.limits,
        model_limits=body.model_limits,
        log_prompts=body.log_prompts,
    )
    return _project(project)


@router.delete("/organizations/{org_id}/projects/{project_id}")
async def delete_project(
    org_id: str, project_id: str, caller: Caller, svc: Services
) -> DeletedProjectOut:
    """Deletes the project's API keys first: none of them works after this returns, on
    any replica (their cached grants are dropped everywhere)."""
    caller.require(Permission.PROJECT_DELETE, org_id, project_id)
    project, key_ids = await svc.actions.delete_project(caller.actor, org_id, project_id)
    return DeletedProjectOut(**project_summary(project), deleted_api_key_ids=list(key_ids))
