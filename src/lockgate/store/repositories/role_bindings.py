"""Role bindings: which principal holds which role, in which organisation or project.

A binding is checked against its subject when created: the user or service
account must exist, and belong to the binding's organisation (deployment users,
with no organisation, may be bound anywhere). An organisation admin therefore
cannot grant roles in their organisation to another tenant's principals.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, insert, or_, select
from sqlalchemy.engine import Row

from lockgate.store.columns import new_id, utc_now
from lockgate.store.errors import Conflict, Invalid, NotFound
from lockgate.store.repositories.base import (
    Repository,
    explained,
    page,
    require,
    tenant_filter,
)
from lockgate.store.schema import role_bindings as _t
from lockgate.store.schema import service_accounts, users
from lockgate.tenancy.model import PrincipalKind, Role, RoleBinding


def to_role_binding(row: Row[Any]) -> RoleBinding:
    return RoleBinding(
        id=row.id,
        subject_kind=PrincipalKind(row.subject_kind),
        subject_id=row.subject_id,
        role=Role(row.role),
        organization_id=row.organization_id,
        project_id=row.project_id,
        created_at=row.created_at,
    )


_SUBJECTS = {PrincipalKind.USER: users, PrincipalKind.SERVICE_ACCOUNT: service_accounts}


def _check_scope(role: Role, organization_id: str | None, project_id: str | None) -> None:
    """The rules the schema's CHECK constraints enforce, with messages a caller can act on."""
    if role is Role.SUPERADMIN and (organization_id is not None or project_id is not None):
        raise Invalid("superadmin is bound deployment-wide: no organization_id or project_id")
    if role is not Role.SUPERADMIN and organization_id is None:
        raise Invalid(f"role {role.value!r} is bound within an organization: give organization_id")


class RoleBindings(Repository):
    async def create(
        self,
        *,
        subject_kind: PrincipalKind,
        subject_id: str,
        role: Role,
        organization_id: str | None,
        project_id: str | None = None,
    ) -> RoleBinding:
        """Raises ``NotFound`` for a subject (or project) outside ``organization_id``,
        ``Conflict`` for a grant that already exists, ``Invalid`` for a superadmin role
        with an organisation or any other role without one."""
        subject_table = _SUBJECTS.get(subject_kind)
        if subject_table is None:
            raise Invalid(f"a {subject_kind} cannot hold roles")
        _check_scope(role, organization_id, project_id)
        record = RoleBinding(
            id=new_id("rb"),
            subject_kind=subject_kind,
            subject_id=subject_id,
            role=role,
            organization_id=organization_id,
            project_id=project_id,
            created_at=utc_now(),
        )
        subject_check = select(subject_table.c.id).where(subject_table.c.id == subject_id)
        if organization_id is not None:
            subject_check = subject_check.where(
                or_(
                    subject_table.c.organization_id == organization_id,
                    subject_table.c.organization_id.is_(None),
                )
            )
        try:
            async with self._connector.connect(write=True) as conn:
                if (await conn.execute(subject_check)).first() is None:
                    raise NotFound(f"{subject_kind} {subject_id!r} not found")
                await conn.execute(
                    insert(_t).values(
                        id=record.id,
                        subject_kind=subject_kind.value,
                        subject_id=subject_id,
                        role=role.value,
                        organization_id=organization_id,
                        project_id=project_id,
                        created_at=record.created_at,
                    )
                )
        except Conflict as error:
            raise explained(
                error,
                duplicate=f"{subject_kind} {subject_id!r} already holds that role there",
                reference=f"organization {organization_id!r} or project {project_id!r} not found",
            ) from error
        return record

    async def get(self, binding_id: str, *, organization_id: str | None) -> RoleBinding:
        statement = select(_t).where(
            _t.c.id == binding_id, tenant_filter(_t.c.organization_id, organization_id)
        )
        async with self._connector.connect(write=False) as conn:
            row = (await conn.execute(statement)).first()
        return to_role_binding(require(row, "role binding", binding_id))

    async def list_for_subject(
        self, subject_kind: PrincipalKind, subject_id: str, *, organization_id: str | None
    ) -> Sequence[RoleBinding]:
        """Every binding of one principal — all of them (superadmin ones included) when
        ``organization_id`` is None, which is what the authoriser asks for."""
        statement = (
            select(_t)
            .where(
                _t.c.subject_kind == subject_kind.value,
                _t.c.subject_id == subject_id,
                tenant_filter(_t.c.organization_id, organization_id),
            )
            .order_by(_t.c.id)
        )
        async with self._connector.connect(write=False) as conn:
            return [to_role_binding(row) for row in await conn.execute(statement)]

    async def list(
        self,
        *,
        organization_id: str | None,
        project_id: str | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> Sequence[RoleBinding]:
        """Bindings in an organisation (or, with ``project_id``, on one project)."""
        statement = select(_t).where(tenant_filter(_t.c.organization_id, organization_id))
        if project_id is not None:
            statement = statement.where(_t.c.project_id == project_id)
        async with self._connector.connect(write=False) as conn:
            rows = await conn.execute(page(statement, _t.c.id, limit=limit, after=after))
            return [to_role_binding(row) for row in rows]

    async def delete(self, binding_id: str, *, organization_id: str | None) -> None:
        statement = (
            delete(_t)
            .where(_t.c.id == binding_id, tenant_filter(_t.c.organization_id, organization_id))
            .returning(_t.c.id)
        )
        async with self._connector.connect(write=True) as conn:
            row = (await conn.execute(statement)).first()
        require(row, "role binding", binding_id)
