"""The permission matrix, one assertion per cell that matters (docs/permissions.md)."""

from __future__ import annotations

import pytest

from lockgate.tenancy.model import Role
from lockgate.tenancy.rbac import ROLE_PERMISSIONS, Grant, Permission, can_grant, is_allowed

ORG, OTHER_ORG, PROJ, OTHER_PROJ = "org_a", "org_b", "proj_a", "proj_b"
P = Permission

# (role bound org-wide in ORG) -> permissions it must have on PROJ in ORG; all others denied.
# Deployment-wide: a tenant's owner must not steer other tenants' traffic.
# Deployment-wide powers no organisation role holds: the fleet and its prices.
DEPLOYMENTS = {P.DEPLOYMENTS_MANAGE, P.DEPLOYMENTS_REGISTER, P.PRICE_MANAGE}
EXPECTED: dict[Role, set[Permission]] = {
    Role.ORG_OWNER: set(Permission) - {P.ORG_CREATE, P.ORG_POLICY, *DEPLOYMENTS},
    Role.ORG_ADMIN: set(Permission) - {P.ORG_CREATE, P.ORG_POLICY, P.ORG_DELETE, *DEPLOYMENTS},
    Role.PROJECT_ADMIN: {
        P.PROJECT_READ, P.PROJECT_UPDATE, P.MEMBER_READ, P.MEMBER_MANAGE, P.KEY_READ,
        P.KEY_MANAGE, P.USAGE_READ, P.MODEL_INVOKE,
    },
    Role.MEMBER: {P.PROJECT_READ, P.MODEL_INVOKE},
    Role.VIEWER: {P.PROJECT_READ, P.USAGE_READ},
    Role.AUDITOR: {P.ORG_READ, P.AUDIT_READ},
    Role.ENGINE: {P.DEPLOYMENTS_REGISTER},
}  # fmt: skip


@pytest.mark.parametrize("role", list(EXPECTED))
@pytest.mark.parametrize("permission", list(Permission))
def test_matrix_cell(role: Role, permission: Permission) -> None:
    grants = [Grant(role, ORG)]
    expected = permission in EXPECTED[role]
    assert is_allowed(grants, permission, organization_id=ORG, project_id=PROJ) is expected


@pytest.mark.parametrize("role", list(EXPECTED))
@pytest.mark.parametrize("permission", list(Permission))
def test_no_role_reaches_another_organisation(role: Role, permission: Permission) -> None:
    grants = [Grant(role, ORG)]
    assert not is_allowed(grants, permission, organization_id=OTHER_ORG, project_id=PROJ)


def test_project_grant_stays_in_its_project() -> None:
    grants = [Grant(Role.PROJECT_ADMIN, ORG, PROJ)]
    assert is_allowed(grants, P.KEY_MANAGE, organization_id=ORG, project_id=PROJ)
    assert not is_allowed(grants, P.KEY_MANAGE, organization_id=ORG, project_id=OTHER_PROJ)
    # Org-level actions need an org-wide grant.
    assert not is_allowed(grants, P.MEMBER_MANAGE, organization_id=ORG, project_id=None)
    assert not is_allowed(grants, P.PROJECT_CREATE, organization_id=ORG)


def test_only_superadmin_acts_deployment_wide() -> None:
    assert is_allowed([Grant(Role.SUPERADMIN, None)], P.ORG_CREATE, organization_id=None)
    assert is_allowed([Grant(Role.SUPERADMIN, None)], P.AUDIT_READ, organization_id=OTHER_ORG)
    for role in EXPECTED:
        assert not is_allowed([Grant(role, ORG)], P.ORG_CREATE, organization_id=None)


def test_tenants_cannot_raise_their_own_ceiling_or_limits() -> None:
    """Org policy is the deployment's quota for a tenant; project policy is the org's
    quota for a project: neither is set by those it limits."""
    for role in EXPECTED:
        assert not is_allowed([Grant(role, ORG)], P.ORG_POLICY, organization_id=ORG)
    assert is_allowed([Grant(Role.SUPERADMIN, None)], P.ORG_POLICY, organization_id=ORG)
    project_admin = [Grant(Role.PROJECT_ADMIN, ORG, PROJ)]
    assert is_allowed(project_admin, P.PROJECT_UPDATE, organization_id=ORG, project_id=PROJ)
    assert not is_allowed(project_admin, P.PROJECT_POLICY, organization_id=ORG, project_id=PROJ)
    org_admin = [Grant(Role.ORG_ADMIN, ORG)]
    assert is_allowed(org_admin, P.PROJECT_POLICY, organization_id=ORG, project_id=PROJ)


def test_no_grants_no_access() -> None:
    for permission in Permission:
        assert not is_allowed([], permission, organization_id=ORG, project_id=PROJ)


def test_superadmin_holds_everything() -> None:
    assert ROLE_PERMISSIONS[Role.SUPERADMIN] == frozenset(Permission)


@pytest.mark.parametrize(
    ("granter", "role", "project", "allowed"),
    [
        (Grant(Role.ORG_OWNER, ORG), Role.ORG_OWNER, None, True),
        (Grant(Role.ORG_ADMIN, ORG), Role.ORG_ADMIN, None, True),
        (Grant(Role.ORG_ADMIN, ORG), Role.ORG_OWNER, None, False),  # no escalation
        (Grant(Role.ORG_ADMIN, ORG), Role.AUDITOR, None, True),
        (Grant(Role.PROJECT_ADMIN, ORG, PROJ), Role.MEMBER, PROJ, True),
        (Grant(Role.PROJECT_ADMIN, ORG, PROJ), Role.VIEWER, PROJ, True),
        (Grant(Role.PROJECT_ADMIN, ORG, PROJ), Role.PROJECT_ADMIN, PROJ, True),
        (Grant(Role.PROJECT_ADMIN, ORG, PROJ), Role.MEMBER, OTHER_PROJ, False),
        (Grant(Role.PROJECT_ADMIN, ORG, PROJ), Role.ORG_ADMIN, None, False),
        (Grant(Role.PROJECT_ADMIN, ORG, PROJ), Role.AUDITOR, PROJ, False),  # org-wide role
        (Grant(Role.MEMBER, ORG), Role.MEMBER, PROJ, False),
        (Grant(Role.AUDITOR, ORG), Role.VIEWER, PROJ, False),
        (Grant(Role.ORG_OWNER, ORG), Role.SUPERADMIN, None, False),
        (Grant(Role.SUPERADMIN, None), Role.SUPERADMIN, None, True),
        (Grant(Role.ORG_OWNER, OTHER_ORG), Role.MEMBER, None, False),
    ],
)
def test_granting_roles_never_escalates(
    granter: Grant, role: Role, project: str | None, allowed: bool
) -> None:
    assert can_grant([granter], role, organization_id=ORG, project_id=project) is allowed
