"""Organisations: the tenants. Not tenant-scoped themselves — who may see which
organisation is the admin API's authorisation decision."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Delete, and_, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from lockgate.admission.spec import NO_LIMITS, LimitSpec, parse_limits
from lockgate.store.columns import new_id, utc_now
from lockgate.store.errors import Conflict, ConflictReason
from lockgate.store.repositories.base import (
    UNSET,
    Repository,
    Unchanged,
    changed,
    json_object,
    limits_json,
    page,
    require,
    strings,
)
from lockgate.store.schema import (
    api_keys,
    idempotency_records,
    projects,
    role_bindings,
    service_accounts,
    upstream_secrets,
    users,
)
from lockgate.store.schema import organizations as _t
from lockgate.tenancy.model import Organization, PrincipalKind


def to_organization(row: Any) -> Organization:
    """``row``: a row of this table, or anything with its columns as attributes."""
    return Organization(
        id=row.id,
        name=row.name,
        created_at=row.created_at,
        metadata=row.metadata,
        allowed_models=strings(row.allowed_models),
        limits=parse_limits(row.limits),
    )


@dataclass(frozen=True, slots=True)
class RemovedContents:
    """What ``delete_with_contents`` removed along with the organisation."""

    api_key_ids: tuple[str, ...]
    project_ids: tuple[str, ...]
    users: int
    service_accounts: int
    role_bindings: int
    upstream_secrets: int


class Organizations(Repository):
    async def create(
        self,
        *,
        name: str,
        metadata: Mapping[str, Any] | None = None,
        allowed_models: Iterable[str] = (),
        limits: LimitSpec = NO_LIMITS,
    ) -> Organization:
        """Raises ``Conflict`` (DUPLICATE) if the name is taken."""
        record = Organization(
            id=new_id("org"),
            name=name,
            created_at=utc_now(),
            metadata=json_object(metadata),
            allowed_models=tuple(allowed_models),
            limits=limits,
        )
        statement = insert(_t).values(
            id=record.id,
            name=name,
            metadata=record.metadata,
            created_at=record.created_at,
            allowed_models=list(record.allowed_models),
            limits=limits_json(limits),
        )
        try:
            async with self._connector.connect(write=True) as conn:
                await conn.execute(statement)
        except Conflict as error:
            raise Conflict(
                f"an organization named {name!r} already exists", reason=error.reason
            ) from error
        return record

    async def get(self, organization_id: str, *, for_update: bool = False) -> Organization:
        """``for_update`` locks the row until the transaction ends (PostgreSQL), so the
        "before" written to the audit log is what the update replaced."""
        statement = select(_t).where(_t.c.id == organization_id)
        if for_update:
            statement = statement.with_for_update()
        async with self._connector.connect(write=for_update) as conn:
            row = (await conn.execute(statement)).first()
        return to_organization(require(row, "organization", organization_id))

    async def list(self, *, limit: int = 100, after: str | None = None) -> Sequence[Organization]:
        async with self._connector.connect(write=False) as conn:
            rows = await conn.execute(page(select(_t), _t.c.id, limit=limit, after=after))
            return [to_organization(row) for row in rows]

    async def update(
        self,
        organization_id: str,
        *,
        name: str | Unchanged = UNSET,
        metadata: Mapping[str, Any] | Unchanged = UNSET,
        allowed_models: Iterable[str] | Unchanged = UNSET,
        limits: LimitSpec | Unchanged = UNSET,
    ) -> Organization:
        values = changed(
            name=name,
            metadata=metadata if metadata is UNSET else json_object(metadata),
            allowed_models=allowed_models if allowed_models is UNSET else list(allowed_models),
            limits=limits if limits is UNSET else limits_json(limits),
        )
        if not values:
            return await self.get(organization_id)
        statement = update(_t).where(_t.c.id == organization_id).values(values).returning(*_t.c)
        try:
            async with self._connector.connect(write=True) as conn:
                row = (await conn.execute(statement)).first()
        except Conflict as error:
            raise Conflict(
                f"an organization named {name!r} already exists", reason=error.reason
            ) from error
        return to_organization(require(row, "organization", organization_id))

    async def delete(self, organization_id: str) -> None:
        """Raises ``Conflict`` (REFERENCE) while projects, users, service accounts or
        secrets still belong to it: a tenant is taken apart deliberately, piece by piece."""
        statement = delete(_t).where(_t.c.id == organization_id).returning(_t.c.id)
        try:
            async with self._connector.connect(write=True) as conn:
                row = (await conn.execute(statement)).first()
        except Conflict as error:
            raise Conflict(
                f"organization {organization_id!r} still has projects, users, "
                "service accounts or secrets",
                reason=ConflictReason.REFERENCE,
            ) from error
        require(row, "organization", organization_id)

    async def delete_with_contents(self, organization_id: str) -> RemovedContents:
        """The organisation and everything in it, children first: API keys, projects,
        role bindings held in it or by its principals (deployment-wide ones included),
        users, service accounts, upstream secrets and idempotency records.

        Which of these the caller may remove (e.g. refusing while projects exist) is
        the admin action's decision. Raises ``NotFound`` for an unknown organisation.
        """
        org = organization_id
        async with self._connector.connect(write=True) as conn:
            key_ids = await _ids(conn, delete(api_keys).where(api_keys.c.organization_id == org))
            project_ids = await _ids(
                conn, delete(projects).where(projects.c.organization_id == org)
            )
            bindings = await _count(conn, _bindings_of(org))
            user_count = await _count(conn, delete(users).where(users.c.organization_id == org))
            account_count = await _count(
                conn, delete(service_accounts).where(service_accounts.c.organization_id == org)
            )
            secrets = await _count(
                conn, delete(upstream_secrets).where(upstream_secrets.c.organization_id == org)
            )
            await conn.execute(
                delete(idempotency_records).where(idempotency_records.c.organization_id == org)
            )
            row = (await conn.execute(delete(_t).where(_t.c.id == org).returning(_t.c.id))).first()
        require(row, "organization", organization_id)
        return RemovedContents(key_ids, project_ids, user_count, account_count, bindings, secrets)


def _bindings_of(organization_id: str) -> Delete:
    """Bindings in the organisation, and any (e.g. superadmin) held by its principals."""
    rb = role_bindings
    return delete(rb).where(
        (rb.c.organization_id == organization_id)
        | and_(
            rb.c.subject_kind == PrincipalKind.USER.value,
            rb.c.subject_id.in_(
                select(users.c.id).where(users.c.organization_id == organization_id)
            ),
        )
        | and_(
            rb.c.subject_kind == PrincipalKind.SERVICE_ACCOUNT.value,
            rb.c.subject_id.in_(
                select(service_accounts.c.id).where(
                    service_accounts.c.organization_id == organization_id
                )
            ),
        )
    )


async def _ids(conn: AsyncConnection, statement: Delete) -> tuple[str, ...]:
    table = statement.table
    rows = await conn.execute(statement.returning(table.c.id))
    return tuple(sorted(str(row.id) for row in rows))


async def _count(conn: AsyncConnection, statement: Delete) -> int:
    return len(await _ids(conn, statement))
