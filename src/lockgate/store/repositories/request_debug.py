"""Request debugging's tables, and the ledger read by request id (``lockgate inspect``).

Sessions count down in the database: ``store_captured`` takes one from a
session's ``remaining`` per record, in the transaction that inserts it, and
skips records of a session that has none left or has expired. Workers and
replicas each capture locally and may capture a few more than asked between
hearing of a session and its end, but no more than ``requested`` are ever
stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, insert, select, text, update
from sqlalchemy.engine import Row

from lockgate.metering.record import UsageRecord
from lockgate.observability.debug_model import CapturedRequest, DebugRecord, DebugSession
from lockgate.store.columns import as_utc, new_id, utc_now
from lockgate.store.repositories.base import MAX_PAGE_SIZE, Repository, tenant_filter
from lockgate.store.repositories.usage import to_record
from lockgate.store.schema import usage_records
from lockgate.store.schema_debugging import request_debug_records as _r
from lockgate.store.schema_debugging import request_debug_sessions as _s

if TYPE_CHECKING:
    from lockgate.store.store import Repositories

# One request id rarely names more than one record (a client reusing its own
# x-request-id); more than this is noise, not detail.
MAX_RECORDS_PER_REQUEST = 20


def _session(row: Row[Any]) -> DebugSession:
    return DebugSession(**row._mapping)


def _record(row: Row[Any]) -> DebugRecord:
    return DebugRecord(**row._mapping)


class RequestDebug(Repository):
    async def create_session(
        self,
        *,
        organization_id: str,
        project_id: str,
        api_key_id: str,
        requested: int,
        created_by: str,
        expires_at: datetime,
    ) -> DebugSession:
        session = DebugSession(
            id=new_id("dbg"),
            organization_id=organization_id,
            project_id=project_id,
            api_key_id=api_key_id,
            requested=requested,
            remaining=requested,
            created_by=created_by,
            created_at=utc_now(),
            expires_at=as_utc(expires_at),
        )
        async with self._connector.connect(write=True) as conn:
            await conn.execute(insert(_s).values(**_fields(session)))
        return session

    async def list_sessions(
        self, *, organization_id: str | None, api_key_id: str, limit: int = 100
    ) -> Sequence[DebugSession]:
        """One key's sessions, newest first."""
        statement = (
            select(_s)
            .where(
                _s.c.api_key_id == api_key_id, tenant_filter(_s.c.organization_id, organization_id)
            )
            .order_by(_s.c.id.desc())
            .limit(min(limit, MAX_PAGE_SIZE))
        )
        async with self._connector.connect(write=False) as conn:
            return [_session(row) for row in (await conn.execute(statement)).all()]

    async def active_sessions(self, now: datetime | None = None) -> Sequence[DebugSession]:
        """Every session with requests left and time left (the data plane's reload)."""
        statement = select(_s).where(_s.c.remaining > 0, _s.c.expires_at > as_utc(now or utc_now()))
        async with self._connector.connect(write=False) as conn:
            return [_session(row) for row in (await conn.execute(statement)).all()]

    async def stop_sessions(
        self, *, organization_id: str | None, api_key_id: str
    ) -> Sequence[DebugSession]:
        """End the key's active sessions (``remaining`` to 0); returns them as they were."""
        active = (
            _s.c.api_key_id == api_key_id,
            tenant_filter(_s.c.organization_id, organization_id),
            _s.c.remaining > 0,
            _s.c.expires_at > as_utc(utc_now()),
        )
        async with self._connector.connect(write=True) as conn:
            rows = (await conn.execute(select(_s).where(*active))).all()
            if rows:
                await conn.execute(
                    update(_s).where(_s.c.id.in_([r.id for r in rows])).values(remaining=0)
                )
        return [_session(row) for row in rows]

    async def store_captured(self, captured: Sequence[CapturedRequest]) -> tuple[int, list[str]]:
        """Store what the sessions still have room for, in one transaction.

        Returns how many records were stored and the ids of the sessions that have
        nothing left now (the caller tells the other workers to stop capturing).
        """
        if not captured:
            return 0, []
        now = as_utc(utc_now())
        rows: list[dict[str, Any]] = []
        touched: set[str] = set()
        async with self._connector.connect(write=True) as conn:
            for item in captured:
                taken = await conn.execute(
                    update(_s)
                    .where(_s.c.id == item.session_id, _s.c.remaining > 0, _s.c.expires_at > now)
                    .values(remaining=_s.c.remaining - 1)
                )
                touched.add(item.session_id)
                if taken.rowcount != 1:
                    continue
                rows.append(
                    {
                        "id": new_id("dbr"),
                        "session_id": item.session_id,
                        "request_id": item.request_id,
                        "organization_id": item.organization_id,
                        "project_id": item.project_id,
                        "api_key_id": item.api_key_id,
                        "occurred_at": as_utc(item.occurred_at),
                        "detail": item.detail,
                    }
                )
            if rows:
                await conn.execute(insert(_r), rows)
            ended = await conn.execute(
                select(_s.c.id).where(_s.c.id.in_(sorted(touched)), _s.c.remaining == 0)
            )
            exhausted = [str(row.id) for row in ended.all()]
        return len(rows), exhausted

    async def prune(self, *, before: datetime) -> int:
        """Delete the records captured before ``before`` and the sessions that expired
        before it; returns how many records went. Idempotent: any process may run it."""
        cutoff = as_utc(before)
        async with self._connector.connect(write=True) as conn:
            gone = await conn.execute(delete(_r).where(_r.c.occurred_at < cutoff))
            await conn.execute(delete(_s).where(_s.c.expires_at < cutoff))
        return int(gone.rowcount or 0)

    async def records_for_request(self, request_id: str) -> Sequence[DebugRecord]:
        """Every captured record with this request id (all tenants: the caller filters)."""
        statement = (
            select(_r)
            .where(_r.c.request_id == request_id)
            .order_by(_r.c.occurred_at, _r.c.id)
            .limit(MAX_RECORDS_PER_REQUEST)
        )
        async with self._connector.connect(write=False) as conn:
            return [_record(row) for row in (await conn.execute(statement)).all()]

    async def records_for_session(
        self, session_id: str, *, limit: int = 100
    ) -> Sequence[DebugRecord]:
        """What one session captured, oldest first."""
        statement = (
            select(_r)
            .where(_r.c.session_id == session_id)
            .order_by(_r.c.occurred_at, _r.c.id)
            .limit(min(limit, MAX_PAGE_SIZE))
        )
        async with self._connector.connect(write=False) as conn:
            return [_record(row) for row in (await conn.execute(statement)).all()]

    async def usage_for_request(self, request_id: str) -> Sequence[UsageRecord]:
        """The ledger's records with this request id (all tenants: the caller filters)."""
        statement = (
            select(usage_records)
            .where(usage_records.c.request_id == request_id)
            .order_by(usage_records.c.occurred_at, usage_records.c.record_id)
            .limit(MAX_RECORDS_PER_REQUEST)
        )
        async with self._connector.connect(write=False) as conn:
            return [to_record(row) for row in (await conn.execute(statement)).all()]

    async def ping(self) -> None:
        """One round trip to the database (readiness): raises ``StoreError`` if it fails."""
        async with self._connector.connect(write=False) as conn:
            await conn.execute(text("SELECT 1"))


def _fields(session: DebugSession) -> dict[str, Any]:
    return {name: getattr(session, name) for name in DebugSession.__slots__}


def request_debug(repositories: Repositories) -> RequestDebug:
    """This repository of ``repositories`` (a ``Store`` or a ``Transaction``), so a
    session and its audit entry commit together."""
    return repositories.request_debug
