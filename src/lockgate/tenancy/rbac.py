"""Roles, permissions, and the one function that decides.

Least privilege: every role is a closed list of permissions (no wildcards
except the deployment superadmin), bindings are scoped to one organisation
and optionally one project, and a role can only be granted by someone who
holds every permission it carries. The matrix is documented in
docs/permissions.md and each cell that matters has a test.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from lockgate.tenancy.model import Role


class Permission(StrEnum):
    ORG_CREATE = "org.create"
    ORG_READ = "org.read"
    ORG_UPDATE = "org.update"
    ORG_DELETE = "org.delete"
    # The organisation's model ceiling and limits: the deployment's quota for a tenant,
    # so only the deployment (superadmin) sets it, never the tenant's own admins.
    ORG_POLICY = "org.policy"
    PROJECT_CREATE = "project.create"
    PROJECT_READ = "project.read"
    PROJECT_UPDATE = "project.update"
    PROJECT_DELETE = "project.delete"
    # A project's allowed models, limits and per-model limits: set by the organisation's
    # admins; a project admin may not widen what their own project may consume.
    PROJECT_POLICY = "project.policy"
    MEMBER_READ = "member.read"  # users, service accounts, role bindings
    MEMBER_MANAGE = "member.manage"
    KEY_READ = "api_key.read"
    KEY_MANAGE = "api_key.manage"  # create, rotate, disable, revoke
    SECRET_MANAGE = "secret.manage"  # noqa: S105 - a permission name, not a secret
    USAGE_READ = "usage.read"
    # Adding price versions: deployment-wide, so in no role but superadmin (like org.policy).
    PRICE_MANAGE = "price.manage"
    # Spend budgets are read with ``usage.read`` (spend against budget is usage) and set
    # by the organisation's admins: a project admin may not lift their own project's cap.
    BUDGET_MANAGE = "budget.manage"
    # Webhook subscriptions of the organisation (URLs, secrets, delivery log, replays).
    WEBHOOK_MANAGE = "webhook.manage"
    AUDIT_READ = "audit.read"
    MODEL_INVOKE = "model.invoke"  # the data plane
    # Deployments of the gateway's models: whoever holds these steers every tenant's
    # traffic, so only the superadmin has them — and engines, ``deployments.register``
    # alone (the ``engine`` role, which only a superadmin can grant).
    DEPLOYMENTS_MANAGE = "deployments.manage"  # add/remove deployments, set rollouts
    DEPLOYMENTS_REGISTER = "deployments.register"  # an engine registers itself, heartbeats


_PROJECT_ADMIN = frozenset(
    {
        Permission.PROJECT_READ,
        Permission.PROJECT_UPDATE,
        Permission.MEMBER_READ,
        # Within the project only: bind project roles; users themselves are org-level.
        Permission.MEMBER_MANAGE,
        Permission.KEY_READ,
        Permission.KEY_MANAGE,
        Permission.USAGE_READ,
        Permission.MODEL_INVOKE,
    }
)
_ORG_ADMIN = _PROJECT_ADMIN | {
    Permission.ORG_READ,
    Permission.ORG_UPDATE,
    Permission.PROJECT_CREATE,
    Permission.PROJECT_DELETE,
    Permission.PROJECT_POLICY,
    Permission.SECRET_MANAGE,
    Permission.AUDIT_READ,
    Permission.BUDGET_MANAGE,
    Permission.WEBHOOK_MANAGE,
}

# ``org.policy`` is in no role but superadmin (which holds every permission).
ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.SUPERADMIN: frozenset(Permission),
    Role.ORG_OWNER: frozenset(_ORG_ADMIN | {Permission.ORG_DELETE}),
    Role.ORG_ADMIN: frozenset(_ORG_ADMIN),
    Role.PROJECT_ADMIN: _PROJECT_ADMIN,
    Role.MEMBER: frozenset({Permission.PROJECT_READ, Permission.MODEL_INVOKE}),
    Role.VIEWER: frozenset({Permission.PROJECT_READ, Permission.USAGE_READ}),
    Role.AUDITOR: frozenset({Permission.ORG_READ, Permission.AUDIT_READ}),
    Role.ENGINE: frozenset({Permission.DEPLOYMENTS_REGISTER}),
}

# Roles that only make sense for a whole organisation (never bound to one project).
ORG_WIDE_ROLES = frozenset({Role.ORG_OWNER, Role.ORG_ADMIN, Role.AUDITOR})


@dataclass(frozen=True, slots=True)
class Grant:
    """One role held within a scope: ``organization_id`` None only for superadmin."""

    role: Role
    organization_id: str | None
    project_id: str | None = None

    def covers(self, organization_id: str | None, project_id: str | None) -> bool:
        if self.role is Role.SUPERADMIN:
            return True
        if organization_id is None or self.organization_id != organization_id:
            return False
        # An org-wide grant covers every project; a project grant only its own.
        return self.project_id is None or self.project_id == project_id


def is_allowed(
    grants: Iterable[Grant],
    permission: Permission,
    *,
    organization_id: str | None,
    project_id: str | None = None,
) -> bool:
    """Does any grant give ``permission`` on this organisation (and project)?

    ``organization_id=None`` asks about deployment-wide actions (creating
    organisations, listing all of them): only the superadmin has those.
    """
    return any(
        permission in ROLE_PERMISSIONS[grant.role] and grant.covers(organization_id, project_id)
        for grant in grants
    )


def can_grant(
    grants: Iterable[Grant], role: Role, *, organization_id: str, project_id: str | None
) -> bool:
    """May the holder of ``grants`` bind ``role`` in this scope?

    No escalation: the granter must hold, in that scope, every permission the
    role carries, plus ``member.manage``. Superadmin is granted only by
    superadmins (and by ``lockgate admin bootstrap``).
    """
    grants = tuple(grants)
    if role is Role.SUPERADMIN:
        return any(g.role is Role.SUPERADMIN for g in grants)
    if project_id is not None and role in ORG_WIDE_ROLES:
        return False
    needed = ROLE_PERMISSIONS[role] | {Permission.MEMBER_MANAGE}
    return all(
        is_allowed(grants, p, organization_id=organization_id, project_id=project_id)
        for p in needed
    )
