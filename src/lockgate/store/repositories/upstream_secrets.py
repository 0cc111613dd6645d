"""Upstream credentials, stored encrypted: this module sees ciphertext only.

Encryption (and which key version decrypts what) belongs to the secrets
service; the store keeps ``key_version`` next to the ciphertext so keys can be
rotated by re-encrypting row by row. A secret is named within its owner:
``organization_id=None`` is a deployment-wide secret, not "any organisation".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from lockgate.store.columns import new_id, utc_now
from lockgate.store.errors import (
    Conflict,
    ConflictReason,
    Invalid,
    NotFound,
    from_integrity_error,
)
from lockgate.store.repositories.base import MAX_PAGE_SIZE, Repository, require
from lockgate.store.schema import upstream_secrets as _t


@dataclass(frozen=True, slots=True)
class UpstreamSecret:
    id: str
    organization_id: str | None
    name: str
    ciphertext: bytes
    key_version: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class UpstreamSecretInfo:
    """A secret as listings show it: everything but the ciphertext."""

    id: str
    organization_id: str | None
    name: str
    key_version: int
    created_at: datetime
    updated_at: datetime


def to_secret(row: Row[Any]) -> UpstreamSecret:
    return UpstreamSecret(
        id=row.id,
        organization_id=row.organization_id,
        name=row.name,
        ciphertext=bytes(row.ciphertext),
        key_version=row.key_version,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _owned_by(organization_id: str | None) -> ColumnElement[bool]:
    if organization_id is None:
        return _t.c.organization_id.is_(None)
    return _t.c.organization_id == organization_id


class UpstreamSecrets(Repository):
    async def put(
        self, *, organization_id: str | None, name: str, ciphertext: bytes, key_version: int
    ) -> UpstreamSecret:
        """Create or replace the named secret (its id and ``created_at`` survive a
        replace). Raises ``NotFound`` for a missing organisation."""
        async with self._connector.connect(write=True) as conn:
            row = await self._replace(conn, organization_id, name, ciphertext, key_version)
            if row is None:
                now = utc_now()
                values = {
                    "id": new_id("sec"),
                    "organization_id": organization_id,
                    "name": name,
                    "ciphertext": bytes(ciphertext),
                    "key_version": key_version,
                    "created_at": now,
                    "updated_at": now,
                }
                try:
                    # A savepoint, so losing a race to a concurrent first put
                    # (PostgreSQL) leaves the transaction usable for the replace.
                    async with conn.begin_nested():
                        row = (await conn.execute(insert(_t).values(values).returning(*_t.c))).one()
                except IntegrityError as error:
                    conflict = from_integrity_error(error)
                    if not isinstance(conflict, Conflict):
                        raise conflict from error
                    if conflict.reason is ConflictReason.REFERENCE:
                        raise NotFound(f"organization {organization_id!r} not found") from error
                    row = await self._replace(conn, organization_id, name, ciphertext, key_version)
        return to_secret(require(row, "secret", name))

    async def get(self, name: str, *, organization_id: str | None) -> UpstreamSecret:
        statement = select(_t).where(_t.c.name == name, _owned_by(organization_id))
        async with self._connector.connect(write=False) as conn:
            row = (await conn.execute(statement)).first()
        return to_secret(require(row, "secret", name))

    async def list_names(self, *, organization_id: str | None) -> Sequence[str]:
        statement = select(_t.c.name).where(_owned_by(organization_id)).order_by(_t.c.name)
        async with self._connector.connect(write=False) as conn:
            return list((await conn.execute(statement)).scalars())

    async def list(
        self, *, organization_id: str | None, limit: int = 100, after: str | None = None
    ) -> Sequence[UpstreamSecretInfo]:
        """The owner's secrets by name (``after``: the last name seen), without ciphertext."""
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise Invalid(f"limit must be between 1 and {MAX_PAGE_SIZE}")
        columns = [c for c in _t.c if c.name != "ciphertext"]
        statement = select(*columns).where(_owned_by(organization_id))
        if after is not None:
            statement = statement.where(_t.c.name > after)
        statement = statement.order_by(_t.c.name).limit(limit)
        async with self._connector.connect(write=False) as conn:
            rows = await conn.execute(statement)
            return [
                UpstreamSecretInfo(
                    id=row.id,
                    organization_id=row.organization_id,
                    name=row.name,
                    key_version=row.key_version,
                    created_at=row.created_at,
                    updated_at=row.updated_at,
                )
                for row in rows
            ]

    async def delete(self, name: str, *, organization_id: str | None) -> None:
        statement = (
            delete(_t).where(_t.c.name == name, _owned_by(organization_id)).returning(_t.c.id)
        )
        async with self._connector.connect(write=True) as conn:
            row = (await conn.execute(statement)).first()
        require(row, "secret", name)

    @staticmethod
    async def _replace(
        conn: AsyncConnection,
        organization_id: str | None,
        name: str,
        ciphertext: bytes,
        key_version: int,
    ) -> Row[Any] | None:
        statement = (
            update(_t)
            .where(_t.c.name == name, _owned_by(organization_id))
            .values(ciphertext=bytes(ciphertext), key_version=key_version, updated_at=utc_now())
            .returning(*_t.c)
        )
        return (await conn.execute(statement)).first()
