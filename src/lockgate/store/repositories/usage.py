"""The usage ledger's table: idempotent inserts that keep the roll-ups, paged reads, reports.

Inserts are ``INSERT … ON CONFLICT (record_id) DO NOTHING``: the metering
flusher may send a batch twice (it crashed after the store committed and before
the journal forgot the batch), and the second copy must change nothing — in the
records and in the roll-ups, which the same transaction adds the new records to
(``usage_rollups.py`` says how only the new ones are counted). They bypass
SQLAlchemy's per-row parameter processing, which costs 20-30 µs a row of
gateway CPU: on PostgreSQL the whole batch is one JSON parameter (encoded by
orjson, ~1 µs a row) that the server unpacks (``json_array_elements``) —
binding columns as arrays instead costs ~16 µs a row in asyncpg's array
encoder; on SQLite the driver's ``executemany`` takes the records nearly as
they are. ``UsageRecord``'s fields are the table's columns, in order, which is
what makes that safe; a test holds them equal.

Aggregates read the roll-ups (``usage_reports.py``): a report over millions of
records reads one row per bucket and dimensions. The admin-set prices and the
CloudEvents push queue hang off this repository too (``usage.prices``,
``usage.push``): they are the ledger's, and every ``Store`` and transaction gets
them without another attribute on ``Repositories``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import and_, or_, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Row

from lockgate.metering.record import UsageRecord
from lockgate.store.columns import as_utc
from lockgate.store.connector import Connector
from lockgate.store.database import Backend
from lockgate.store.errors import Invalid, StoreError
from lockgate.store.repositories.base import MAX_PAGE_SIZE, Repository, tenant_filter
from lockgate.store.repositories.prices import PriceVersions
from lockgate.store.repositories.usage_push import PushQueue
from lockgate.store.repositories.usage_reports import (
    Dimension,
    Filters,
    Granularity,
    UsageBucket,
    aggregate,
)
from lockgate.store.repositories.usage_rollups import (
    RETURNED,
    postgres_queue_cte,
    postgres_rollup_ctes,
    sqlite_add_to_rollups,
    sqlite_existing,
    sqlite_queue_for_push,
)
from lockgate.store.schema import usage_records as _t

__all__ = ["Dimension", "Granularity", "UsageBucket", "UsageRecords", "to_record"]

# Statements built once from the table's own column names and types (no input in them).
_COLUMNS = ", ".join(_t.c.keys())
_SQLITE_INSERT = str(
    sqlite_insert(_t)
    .on_conflict_do_nothing(index_elements=[_t.c.record_id])
    .compile(dialect=sqlite.dialect())
)
_PG_FIELDS = ", ".join(
    f"CAST(r->>{i} AS {column.type.compile(dialect=postgresql.dialect())})"  # type: ignore[no-untyped-call]
    for i, column in enumerate(_t.c)
)
_PG_INSERTED = (
    f"WITH inserted AS (INSERT INTO {_t.name} ({_COLUMNS}) "  # noqa: S608
    f"SELECT {_PG_FIELDS} FROM json_array_elements(CAST(:rows AS json)) AS r "
    f"ON CONFLICT (record_id) DO NOTHING RETURNING {', '.join(RETURNED)})"
    + postgres_rollup_ctes("inserted")
)
_PG_INSERT = text(_PG_INSERTED + " SELECT count(*) FROM inserted")  # noqa: S608
_PG_INSERT_AND_QUEUE = text(
    _PG_INSERTED + postgres_queue_cte("inserted") + " SELECT count(*) FROM inserted"  # noqa: S608
)
_OCCURRED_AT = 2  # the position of occurred_at in a record


def to_record(row: Row[Any]) -> UsageRecord:
    # The table's columns are the record's fields, name for name.
    return UsageRecord(**row._mapping)


class UsageRecords(Repository):
    def __init__(self, connector: Connector) -> None:
        super().__init__(connector)
        self.prices = PriceVersions(connector)
        self.push = PushQueue(connector)

    async def insert_many(
        self, records: Sequence[UsageRecord], *, queue_for_push: bool = False
    ) -> int:
        """Insert the records the ledger does not have yet and add them to the roll-ups,
        in one transaction; return how many were new (the rest were already there: a
        re-sent batch, which changes nothing). ``queue_for_push``: also queue the new
        ones for the CloudEvents pusher.

        Raises ``Invalid`` for a naive ``occurred_at``, or values the schema refuses.
        """
        if not records:
            return 0
        if self._connector.backend is Backend.POSTGRESQL:
            return await self._insert_postgres(records, queue_for_push)
        async with self._connector.connect(write=True) as conn:
            # The write transaction is exclusive: nothing can add records between the
            # look-up and the insert.
            existing = await sqlite_existing(conn, [r.record_id for r in records])
            # SQLite holds times as fixed-width UTC text (columns.UtcDateTime).
            rows = [
                (*r[:_OCCURRED_AT], _sqlite_time(r.occurred_at), *r[_OCCURRED_AT + 1 :])
                for r in records
            ]
            await conn.exec_driver_sql(_SQLITE_INSERT, rows)
            new: list[UsageRecord] = []
            for record in records:
                if record.record_id not in existing:
                    existing.add(record.record_id)  # a batch naming a record twice adds it once
                    new.append(record)
            await sqlite_add_to_rollups(conn, new)
            if queue_for_push:
                await sqlite_queue_for_push(conn, [r.record_id for r in new])
            return len(new)

    async def _insert_postgres(self, records: Sequence[UsageRecord], queue_for_push: bool) -> int:
        if any(r.occurred_at.utcoffset() is None for r in records):
            raise Invalid("timestamps must be timezone-aware")
        batch = orjson.dumps(records, default=tuple)
        if b"\\u0000" in batch:  # rare: only then look at each value
            # PostgreSQL text cannot hold NUL; a client can put one in a model name.
            batch = orjson.dumps([[_without_nul(value) for value in record] for record in records])
        statement = _PG_INSERT_AND_QUEUE if queue_for_push else _PG_INSERT
        try:
            async with self._connector.connect(write=True) as conn:
                return int(await conn.scalar(statement, {"rows": batch.decode()}) or 0)
        except StoreError as error:
            # A data exception (SQLSTATE class 22) is about the values, not the database:
            # no retry will fix it, so say ``Invalid`` and let the caller set it aside.
            cause = error.__cause__
            sqlstate = str(getattr(getattr(cause, "orig", None), "sqlstate", "") or "")
            if sqlstate.startswith("22"):
                raise Invalid(f"the values break a rule of the database ({sqlstate})") from error
            raise

    async def get(self, record_id: str, *, organization_id: str | None) -> UsageRecord | None:
        statement = select(_t).where(
            _t.c.record_id == record_id, tenant_filter(_t.c.organization_id, organization_id)
        )
        async with self._connector.connect(write=False) as conn:
            row = (await conn.execute(statement)).first()
        return None if row is None else to_record(row)

    async def get_many(self, record_ids: Sequence[str]) -> list[UsageRecord]:
        """The records with these ids that exist, in no particular order (the pusher)."""
        if not record_ids:
            return []
        async with self._connector.connect(write=False) as conn:
            rows = (await conn.execute(select(_t).where(_t.c.record_id.in_(record_ids)))).all()
        return [to_record(row) for row in rows]

    async def list(
        self,
        *,
        organization_id: str | None,
        start: datetime,
        end: datetime,
        limit: int = 100,
        after: tuple[datetime, str] | None = None,
        project_id: str | None = None,
        api_key_id: str | None = None,
        model: str | None = None,
    ) -> Sequence[UsageRecord]:
        """Records with ``start <= occurred_at < end``, oldest first, ``limit`` at a time.

        Paging is by keyset: pass the last record's ``(occurred_at, record_id)`` as
        ``after`` for the next page. Records flushed later with an earlier time (a
        journal replayed after an outage) appear on pages already read: exports
        that must see every record read a range that has settled.
        """
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise Invalid(f"limit must be between 1 and {MAX_PAGE_SIZE}")
        statement = select(_t).where(
            tenant_filter(_t.c.organization_id, organization_id),
            _t.c.occurred_at >= as_utc(start),
            _t.c.occurred_at < as_utc(end),
        )
        for column, value in (
            (_t.c.project_id, project_id),
            (_t.c.api_key_id, api_key_id),
            (_t.c.model, model),
        ):
            if value is not None:
                statement = statement.where(column == value)
        if after is not None:
            at, record_id = as_utc(after[0]), after[1]
            statement = statement.where(
                or_(_t.c.occurred_at > at, and_(_t.c.occurred_at == at, _t.c.record_id > record_id))
            )
        statement = statement.order_by(_t.c.occurred_at, _t.c.record_id).limit(limit)
        async with self._connector.connect(write=False) as conn:
            rows = (await conn.execute(statement)).all()
        return [to_record(row) for row in rows]

    async def aggregate(
        self,
        *,
        organization_id: str | None,
        start: datetime,
        end: datetime,
        granularity: Granularity,
        group_by: Sequence[Dimension] = (),
        project_id: str | None = None,
        api_key_id: str | None = None,
        model: str | None = None,
    ) -> Sequence[UsageBucket]:
        """Usage and cost per UTC ``granularity`` bucket in ``[start, end)``, broken down
        by ``group_by``, ordered by bucket then dimensions (None last).

        ``organization_id`` is the tenant (None: deployment-wide, superadmins only);
        the other filters narrow within it. Read from the roll-ups, exact for any
        range (``usage_reports``). Raises ``Invalid`` for naive times.
        """
        filters = Filters(organization_id, project_id, api_key_id, model)
        start, end = as_utc(start), as_utc(end)
        async with self._connector.connect(write=False) as conn:
            return await aggregate(
                conn,
                start=start,
                end=end,
                granularity=granularity,
                group_by=group_by,
                filters=filters,
            )


def _without_nul(value: Any) -> Any:
    return value.replace("\x00", "\ufffd") if isinstance(value, str) else value


def _sqlite_time(value: datetime) -> str:
    return as_utc(value).isoformat(timespec="microseconds")
