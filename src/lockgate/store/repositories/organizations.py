"""Organisations: the tenants. Not tenant-scoped themselves — who may see which
organisation is the admin API's authorisation decision."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Row

from lockgate.store.columns import new_id, utc_now
from lockgate.store.errors import Conflict, ConflictReason
from lockgate.store.repositories.base import (
    UNSET,
    Repository,
    Unchanged,
    changed,
    json_object,
    page,
    require,
)
from lockgate.store.schema import organizations as _t
from lockgate.tenancy.model import Organization


def to_organization(row: Row[Any]) -> Organization:
    return Organization(id=row.id, name=row.name, created_at=row.created_at, metadata=row.metadata)


class Organizations(Repository):
    async def create(self, *, name: str, metadata: Mapping[str, Any] | None = None) -> Organization:
        """Raises ``Conflict`` (DUPLICATE) if the name is taken."""
        record = Organization(
            id=new_id("org"), name=name, created_at=utc_now(), metadata=json_object(metadata)
        )
        statement = insert(_t).values(
            id=record.id, name=name, metadata=record.metadata, created_at=record.created_at
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
    ) -> Organization:
        values = changed(name=name, metadata=metadata)
        if "metadata" in values:
            values["metadata"] = json_object(values["metadata"])
        if not values:
            return await self.get(organization_id)
        statement = update(_t).where(_t.c.id == organization_id).values(values).returning(*_t.c)
        async with self._connector.connect(write=True) as conn:
            row = (await conn.execute(statement)).first()
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
