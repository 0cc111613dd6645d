"""The audit log: append-only, hash-chained, one total order across all replicas.

Appending reads the head (the highest ``seq``) and inserts ``seq + 1`` chained to
its hash, so two appenders must never read the same head. PostgreSQL: the
appender takes ``pg_advisory_xact_lock`` first, held until its transaction ends,
and under READ COMMITTED its next statement sees the previous holder's commit.
SQLite: every write transaction began with ``BEGIN IMMEDIATE``, which already
holds the database's one write lock. The primary key on ``seq`` and the unique
``entry_hash`` are the backstop: a forked chain cannot be committed. Because the
lock is held until commit, entries also commit in ``seq`` order: a reader never
sees entry n+1 before entry n.

``before``/``after`` are normalised through JSON before hashing, so the hash is
over exactly what is stored and what ``list``/``iter_all`` return.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, text
from sqlalchemy.engine import Row

from lockgate.store.columns import as_utc, utc_now
from lockgate.store.database import Backend
from lockgate.store.errors import Invalid
from lockgate.store.repositories.base import MAX_PAGE_SIZE, Repository, json_value
from lockgate.store.schema import audit_log as _t
from lockgate.tenancy.audit import GENESIS_HASH, chain_hash, entry_content
from lockgate.tenancy.model import AuditEntry

# sha256("lockgate.store.audit")[:8] as a signed 64-bit integer.
AUDIT_LOCK_KEY = -3021087235517204294


def to_entry(row: Row[Any]) -> AuditEntry:
    return AuditEntry(
        seq=row.seq,
        at=row.at,
        actor=row.actor,
        action=row.action,
        target_type=row.target_type,
        target_id=row.target_id,
        organization_id=row.organization_id,
        before=row.before,
        after=row.after,
        source_ip=row.source_ip,
        request_id=row.request_id,
        prev_hash=row.prev_hash,
        entry_hash=row.entry_hash,
    )


def _json_object(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    result = json_value(dict(value))
    assert isinstance(result, dict)
    return result


class AuditLog(Repository):
    async def append(
        self,
        *,
        actor: str,
        action: str,
        target_type: str,
        target_id: str,
        organization_id: str | None,
        before: Mapping[str, Any] | None = None,
        after: Mapping[str, Any] | None = None,
        source_ip: str | None = None,
        request_id: str | None = None,
    ) -> AuditEntry:
        """Append one entry; in ``store.transaction()`` it commits (or not) with the action.

        Append after the transaction's other writes (``TransactionConnector`` enforces
        it): on PostgreSQL the audit lock is held from here until commit.
        """
        fields: dict[str, Any] = {
            "actor": actor,
            "action": action,
            "target_type": target_type,
            "target_id": target_id,
            "organization_id": organization_id,
            "before": _json_object(before),
            "after": _json_object(after),
            "source_ip": source_ip,
            "request_id": request_id,
        }
        async with self._connector.connect(write=True, is_audit=True) as conn:
            if self._connector.backend is Backend.POSTGRESQL:
                await conn.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": AUDIT_LOCK_KEY}
                )
            head = (
                await conn.execute(
                    select(_t.c.seq, _t.c.entry_hash).order_by(_t.c.seq.desc()).limit(1)
                )
            ).first()
            seq = 1 if head is None else head.seq + 1
            prev_hash = GENESIS_HASH if head is None else head.entry_hash
            at = utc_now()
            entry_hash = chain_hash(prev_hash, entry_content(seq=seq, at=at, **fields))
            entry = AuditEntry(seq=seq, at=at, prev_hash=prev_hash, entry_hash=entry_hash, **fields)
            await conn.execute(
                insert(_t).values(
                    seq=seq, at=at, prev_hash=prev_hash, entry_hash=entry_hash, **fields
                )
            )
        return entry

    async def list(
        self,
        *,
        organization_id: str | None,
        actor: str | None = None,
        action: str | None = None,
        target_type: str | None = None,
        target_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        before_seq: int | None = None,
    ) -> Sequence[AuditEntry]:
        """Newest first. For the next page pass ``before_seq`` = the last entry's ``seq``.

        ``organization_id=None`` lists the whole deployment (superadmins, auditors of
        the deployment); ``since`` is inclusive, ``until`` exclusive.
        """
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise Invalid(f"limit must be between 1 and {MAX_PAGE_SIZE}")
        statement = select(_t)
        for column, value in (
            (_t.c.organization_id, organization_id),
            (_t.c.actor, actor),
            (_t.c.action, action),
            (_t.c.target_type, target_type),
            (_t.c.target_id, target_id),
        ):
            if value is not None:
                statement = statement.where(column == value)
        if since is not None:
            statement = statement.where(_t.c.at >= as_utc(since))
        if until is not None:
            statement = statement.where(_t.c.at < as_utc(until))
        if before_seq is not None:
            statement = statement.where(_t.c.seq < before_seq)
        statement = statement.order_by(_t.c.seq.desc()).limit(limit)
        async with self._connector.connect(write=False) as conn:
            return [to_entry(row) for row in await conn.execute(statement)]

    async def head(self) -> AuditEntry | None:
        """The latest entry, or None for an empty log."""
        async with self._connector.connect(write=False) as conn:
            row = (await conn.execute(select(_t).order_by(_t.c.seq.desc()).limit(1))).first()
        return None if row is None else to_entry(row)

    async def iter_all(self, *, batch_size: int = 500) -> AsyncIterator[AuditEntry]:
        """Every entry in ``seq`` order, fetched in batches (a short query each, no long
        transaction or open cursor), for ``tenancy.audit.verify_chain``."""
        after = 0
        while True:
            statement = select(_t).where(_t.c.seq > after).order_by(_t.c.seq).limit(batch_size)
            async with self._connector.connect(write=False) as conn:
                rows = (await conn.execute(statement)).all()
            for row in rows:
                yield to_entry(row)
            if len(rows) < batch_size:
                return
            after = rows[-1].seq
