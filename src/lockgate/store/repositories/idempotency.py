"""Idempotency records: what an admin request with an ``Idempotency-Key`` did, for a day.

Keyed by (principal, key): one caller's keys never collide with another's. A
record is claimed (inserted) first in the action's transaction and completed
with the response before it commits, so a committed record always describes
a committed change, and a concurrent request with the same key waits on the
primary key and then fails with ``Conflict`` instead of acting twice. The
response is stored as the caller gives it (the admin actions encrypt it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Row

from lockgate.store.columns import utc_now
from lockgate.store.errors import StoreError
from lockgate.store.repositories.base import Repository
from lockgate.store.schema import idempotency_records as _t


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    principal: str
    idempotency_key: str
    request_hash: str
    organization_id: str | None
    response: bytes | None  # None: not kept (no master key to encrypt it with)
    created_at: datetime
    expires_at: datetime


def to_record(row: Row[Any]) -> IdempotencyRecord:
    return IdempotencyRecord(
        principal=row.principal,
        idempotency_key=row.idempotency_key,
        request_hash=row.request_hash,
        organization_id=row.organization_id,
        response=None if row.response is None else bytes(row.response),
        created_at=row.created_at,
        expires_at=row.expires_at,
    )


class IdempotencyRecords(Repository):
    async def get(self, principal: str, idempotency_key: str) -> IdempotencyRecord | None:
        """The record, expired or not (the caller compares ``expires_at``), or None."""
        statement = select(_t).where(
            _t.c.principal == principal, _t.c.idempotency_key == idempotency_key
        )
        async with self._connector.connect(write=False) as conn:
            row = (await conn.execute(statement)).first()
        return None if row is None else to_record(row)

    async def claim(
        self,
        *,
        principal: str,
        idempotency_key: str,
        request_hash: str,
        organization_id: str | None,
        expires_at: datetime,
    ) -> None:
        """Insert a record without a response, replacing an expired one under the same key.

        Raises ``Conflict`` (DUPLICATE) when a live record exists, including one a
        concurrent transaction committed while this one waited for it.
        """
        now = utc_now()
        async with self._connector.connect(write=True) as conn:
            await conn.execute(
                delete(_t).where(
                    _t.c.principal == principal,
                    _t.c.idempotency_key == idempotency_key,
                    _t.c.expires_at <= now,
                )
            )
            await conn.execute(
                insert(_t).values(
                    principal=principal,
                    idempotency_key=idempotency_key,
                    request_hash=request_hash,
                    organization_id=organization_id,
                    response=None,
                    created_at=now,
                    expires_at=expires_at,
                )
            )

    async def complete(self, principal: str, idempotency_key: str, response: bytes | None) -> None:
        """Attach the response to a record claimed in the same transaction."""
        statement = (
            update(_t)
            .where(_t.c.principal == principal, _t.c.idempotency_key == idempotency_key)
            .values(response=response)
            .returning(_t.c.principal)
        )
        async with self._connector.connect(write=True) as conn:
            if (await conn.execute(statement)).first() is None:
                raise StoreError("the idempotency record was not claimed in this transaction")

    async def purge_expired(self) -> int:
        """Delete every expired record (their responses may hold secrets: keep none longer)."""
        statement = delete(_t).where(_t.c.expires_at <= utc_now()).returning(_t.c.principal)
        async with self._connector.connect(write=True) as conn:
            return len((await conn.execute(statement)).all())
