"""Users and service accounts: the principals that hold roles.

Emails are stored lower-cased: "Alice@example.com" and "alice@example.com" are
one person, and uniqueness per organisation must see them as one. Deleting a
principal removes its role bindings in the same transaction (bindings refer to
principals of two kinds, so no foreign key can cascade them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table, delete, insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from lockgate.store.columns import new_id, utc_now
from lockgate.store.errors import Conflict, ConflictReason
from lockgate.store.repositories.base import (
    UNSET,
    Repository,
    Unchanged,
    changed,
    explained,
    page,
    require,
    tenant_filter,
)
from lockgate.store.schema import role_bindings, service_accounts, users
from lockgate.tenancy.model import PrincipalKind, ServiceAccount, User


def to_user(row: Row[Any]) -> User:
    return User(
        id=row.id,
        organization_id=row.organization_id,
        email=row.email,
        name=row.name,
        created_at=row.created_at,
        is_disabled=row.is_disabled,
    )


def to_service_account(row: Row[Any]) -> ServiceAccount:
    return ServiceAccount(
        id=row.id,
        organization_id=row.organization_id,
        name=row.name,
        created_at=row.created_at,
        is_disabled=row.is_disabled,
    )


async def _delete_with_bindings(
    conn: AsyncConnection,
    table: Table,
    kind: PrincipalKind,
    subject_id: str,
    organization_id: str | None,
) -> Row[Any] | None:
    row = (
        await conn.execute(
            delete(table)
            .where(
                table.c.id == subject_id, tenant_filter(table.c.organization_id, organization_id)
            )
            .returning(table.c.id)
        )
    ).first()
    if row is not None:
        await conn.execute(
            delete(role_bindings).where(
                role_bindings.c.subject_kind == kind.value,
                role_bindings.c.subject_id == subject_id,
            )
        )
    return row


class Users(Repository):
    async def create(
        self, *, organization_id: str | None, email: str, name: str, is_disabled: bool = False
    ) -> User:
        """``organization_id=None`` creates a deployment user (for superadmins). Raises
        ``Conflict`` if the email is taken in that organisation, ``NotFound`` for a
        missing organisation."""
        record = User(
            id=new_id("user"),
            organization_id=organization_id,
            email=email.strip().lower(),
            name=name,
            created_at=utc_now(),
            is_disabled=is_disabled,
        )
        try:
            async with self._connector.connect(write=True) as conn:
                await conn.execute(insert(users).values(_values(record)))
        except Conflict as error:
            raise explained(
                error,
                duplicate=f"a user with email {record.email!r} already exists",
                reference=f"organization {organization_id!r} not found",
            ) from error
        return record

    async def get(
        self, user_id: str, *, organization_id: str | None, for_update: bool = False
    ) -> User:
        statement = select(users).where(
            users.c.id == user_id, tenant_filter(users.c.organization_id, organization_id)
        )
        if for_update:
            statement = statement.with_for_update()
        async with self._connector.connect(write=for_update) as conn:
            row = (await conn.execute(statement)).first()
        return to_user(require(row, "user", user_id))

    async def list(
        self, *, organization_id: str | None, limit: int = 100, after: str | None = None
    ) -> Sequence[User]:
        statement = select(users).where(tenant_filter(users.c.organization_id, organization_id))
        async with self._connector.connect(write=False) as conn:
            rows = await conn.execute(page(statement, users.c.id, limit=limit, after=after))
            return [to_user(row) for row in rows]

    async def update(
        self,
        user_id: str,
        *,
        organization_id: str | None,
        email: str | Unchanged = UNSET,
        name: str | Unchanged = UNSET,
        is_disabled: bool | Unchanged = UNSET,
    ) -> User:
        values = changed(
            email=email if email is UNSET else email.strip().lower(),
            name=name,
            is_disabled=is_disabled,
        )
        if not values:
            return await self.get(user_id, organization_id=organization_id)
        statement = (
            update(users)
            .where(users.c.id == user_id, tenant_filter(users.c.organization_id, organization_id))
            .values(values)
            .returning(*users.c)
        )
        async with self._connector.connect(write=True) as conn:
            row = (await conn.execute(statement)).first()
        return to_user(require(row, "user", user_id))

    async def delete(self, user_id: str, *, organization_id: str | None) -> None:
        async with self._connector.connect(write=True) as conn:
            row = await _delete_with_bindings(
                conn, users, PrincipalKind.USER, user_id, organization_id
            )
        require(row, "user", user_id)


class ServiceAccounts(Repository):
    async def create(
        self, *, organization_id: str, name: str, is_disabled: bool = False
    ) -> ServiceAccount:
        record = ServiceAccount(
            id=new_id("sa"),
            organization_id=organization_id,
            name=name,
            created_at=utc_now(),
            is_disabled=is_disabled,
        )
        try:
            async with self._connector.connect(write=True) as conn:
                await conn.execute(insert(service_accounts).values(_values(record)))
        except Conflict as error:
            raise explained(
                error,
                duplicate=f"a service account named {name!r} already exists",
                reference=f"organization {organization_id!r} not found",
            ) from error
        return record

    async def get(
        self, service_account_id: str, *, organization_id: str | None, for_update: bool = False
    ) -> ServiceAccount:
        t = service_accounts
        statement = select(t).where(
            t.c.id == service_account_id, tenant_filter(t.c.organization_id, organization_id)
        )
        if for_update:
            statement = statement.with_for_update()
        async with self._connector.connect(write=for_update) as conn:
            row = (await conn.execute(statement)).first()
        return to_service_account(require(row, "service account", service_account_id))

    async def list(
        self, *, organization_id: str | None, limit: int = 100, after: str | None = None
    ) -> Sequence[ServiceAccount]:
        t = service_accounts
        statement = select(t).where(tenant_filter(t.c.organization_id, organization_id))
        async with self._connector.connect(write=False) as conn:
            rows = await conn.execute(page(statement, t.c.id, limit=limit, after=after))
            return [to_service_account(row) for row in rows]

    async def update(
        self,
        service_account_id: str,
        *,
        organization_id: str | None,
        name: str | Unchanged = UNSET,
        is_disabled: bool | Unchanged = UNSET,
    ) -> ServiceAccount:
        t = service_accounts
        values = changed(name=name, is_disabled=is_disabled)
        if not values:
            return await self.get(service_account_id, organization_id=organization_id)
        statement = (
            update(t)
            .where(
                t.c.id == service_account_id, tenant_filter(t.c.organization_id, organization_id)
            )
            .values(values)
            .returning(*t.c)
        )
        async with self._connector.connect(write=True) as conn:
            row = (await conn.execute(statement)).first()
        return to_service_account(require(row, "service account", service_account_id))

    async def delete(self, service_account_id: str, *, organization_id: str | None) -> None:
        """Raises ``Conflict`` (REFERENCE) while API keys act for it."""
        try:
            async with self._connector.connect(write=True) as conn:
                row = await _delete_with_bindings(
                    conn,
                    service_accounts,
                    PrincipalKind.SERVICE_ACCOUNT,
                    service_account_id,
                    organization_id,
                )
        except Conflict as error:
            raise Conflict(
                f"service account {service_account_id!r} still has API keys",
                reason=ConflictReason.REFERENCE,
            ) from error
        require(row, "service account", service_account_id)


def _values(record: User | ServiceAccount) -> dict[str, Any]:
    values = {
        "id": record.id,
        "organization_id": record.organization_id,
        "name": record.name,
        "is_disabled": record.is_disabled,
        "created_at": record.created_at,
    }
    if isinstance(record, User):
        values["email"] = record.email
    return values
