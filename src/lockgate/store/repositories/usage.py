"""The usage ledger's table: idempotent inserts, paged reads, and aggregates for reports.

Inserts are ``INSERT … ON CONFLICT (record_id) DO NOTHING``: the metering
flusher may send a batch twice (it crashed after the store committed and before
the journal forgot the batch), and the second copy must change nothing. They
bypass SQLAlchemy's per-row parameter processing, which costs 20-30 µs a row
of gateway CPU: on PostgreSQL the whole batch is one JSON parameter (encoded by
orjson, ~1 µs a row) that the server unpacks (``json_array_elements``) — binding
columns as arrays instead costs ~16 µs a row in asyncpg's array encoder; on
SQLite the driver's ``executemany`` takes the records nearly as they are.
``UsageRecord``'s fields are the table's columns, in order, which is what makes
that safe; a test holds them equal.

Aggregates group on the record's time truncated to a UTC hour, day or month,
computed in SQL on both backends: ``date_trunc(unit, occurred_at, 'UTC')`` on
PostgreSQL; on SQLite, where times are fixed-width ISO-8601 text (see
``columns.py``), a prefix of the text plus the rest of the bucket's start. No
roll-up tables yet: the range scans use the (organization_id, occurred_at)
index, and a roll-up can be added behind this same method when the bench says
raw scans are too slow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import orjson
from sqlalchemy import (
    ColumnElement,
    String,
    and_,
    case,
    func,
    literal_column,
    or_,
    select,
    text,
    type_coerce,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Row

from lockgate.metering.record import UsageRecord
from lockgate.store.columns import UtcDateTime, as_utc
from lockgate.store.database import Backend
from lockgate.store.errors import Invalid, StoreError
from lockgate.store.repositories.base import MAX_PAGE_SIZE, Repository, tenant_filter
from lockgate.store.schema import usage_records as _t


class Granularity(StrEnum):
    HOUR = "hour"
    DAY = "day"
    MONTH = "month"


class Dimension(StrEnum):
    """What an aggregate may be broken down by."""

    ORGANIZATION = "organization"
    PROJECT = "project"
    KEY = "key"
    MODEL = "model"


_DIMENSION_COLUMNS = {
    Dimension.ORGANIZATION: _t.c.organization_id,
    Dimension.PROJECT: _t.c.project_id,
    Dimension.KEY: _t.c.api_key_id,
    Dimension.MODEL: _t.c.model,
}
# SQLite: the text before the cut, then the rest of the bucket's start.
_SQLITE_BUCKETS = {
    Granularity.HOUR: (13, ":00:00.000000+00:00"),
    Granularity.DAY: (10, "T00:00:00.000000+00:00"),
    Granularity.MONTH: (7, "-01T00:00:00.000000+00:00"),
}


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
_PG_INSERT = text(
    f"WITH inserted AS (INSERT INTO {_t.name} ({_COLUMNS}) "  # noqa: S608
    f"SELECT {_PG_FIELDS} FROM json_array_elements(CAST(:rows AS json)) AS r "
    "ON CONFLICT (record_id) DO NOTHING RETURNING 1) SELECT count(*) FROM inserted"
)
_OCCURRED_AT = 2  # the position of occurred_at in a record


@dataclass(frozen=True, slots=True)
class UsageBucket:
    """Usage in one time bucket; dimensions not grouped by are None."""

    bucket_start: datetime
    organization_id: str | None
    project_id: str | None
    api_key_id: str | None
    model: str | None
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    cost_micros: int
    estimated_requests: int
    error_requests: int


def to_record(row: Row[Any]) -> UsageRecord:
    # The table's columns are the record's fields, name for name.
    return UsageRecord(**row._mapping)


class UsageRecords(Repository):
    async def insert_many(self, records: Sequence[UsageRecord]) -> int:
        """Insert the records the ledger does not have yet, in one transaction; return
        how many were new (the rest were already there: a re-sent batch).

        Raises ``Invalid`` for a naive ``occurred_at``, or values the schema refuses.
        """
        if not records:
            return 0
        if self._connector.backend is Backend.POSTGRESQL:
            return await self._insert_postgres(records)
        async with self._connector.connect(write=True) as conn:
            # SQLite holds times as fixed-width UTC text (columns.UtcDateTime).
            rows = [
                (*r[:_OCCURRED_AT], _sqlite_time(r.occurred_at), *r[_OCCURRED_AT + 1 :])
                for r in records
            ]
            before = await conn.scalar(text("SELECT total_changes()"))
            await conn.exec_driver_sql(_SQLITE_INSERT, rows)
            after = await conn.scalar(text("SELECT total_changes()"))
            return int(after) - int(before)

    async def _insert_postgres(self, records: Sequence[UsageRecord]) -> int:
        if any(r.occurred_at.utcoffset() is None for r in records):
            raise Invalid("timestamps must be timezone-aware")
        batch = orjson.dumps(records, default=tuple)
        if b"\\u0000" in batch:  # rare: only then look at each value
            # PostgreSQL text cannot hold NUL; a client can put one in a model name.
            batch = orjson.dumps([[_without_nul(value) for value in record] for record in records])
        try:
            async with self._connector.connect(write=True) as conn:
                return int(await conn.scalar(_PG_INSERT, {"rows": batch.decode()}) or 0)
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

    async def list(
        self,
        *,
        organization_id: str | None,
        start: datetime,
        end: datetime,
        limit: int = 100,
        after: tuple[datetime, str] | None = None,
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
        by ``group_by``, ordered by bucket then dimensions.

        ``organization_id`` is the tenant (None: deployment-wide, superadmins only);
        the other filters narrow within it.
        """
        bucket = self._bucket(granularity)
        dimensions = [_DIMENSION_COLUMNS[d] for d in dict.fromkeys(group_by)]
        statement = (
            select(
                bucket,
                *dimensions,
                func.count().label("requests"),
                func.sum(_t.c.prompt_tokens).label("prompt_tokens"),
                func.sum(_t.c.completion_tokens).label("completion_tokens"),
                func.sum(_t.c.cached_tokens).label("cached_tokens"),
                func.sum(_t.c.reasoning_tokens).label("reasoning_tokens"),
                func.sum(_t.c.cost_micros).label("cost_micros"),
                func.sum(case((_t.c.is_estimated, 1), else_=0)).label("estimated_requests"),
                func.sum(case((_t.c.error_code.is_not(None), 1), else_=0)).label("error_requests"),
            )
            .where(
                tenant_filter(_t.c.organization_id, organization_id),
                _t.c.occurred_at >= as_utc(start),
                _t.c.occurred_at < as_utc(end),
            )
            .group_by(bucket, *dimensions)
            .order_by(bucket, *dimensions)
        )
        for column, value in (
            (_t.c.project_id, project_id),
            (_t.c.api_key_id, api_key_id),
            (_t.c.model, model),
        ):
            if value is not None:
                statement = statement.where(column == value)
        async with self._connector.connect(write=False) as conn:
            rows = (await conn.execute(statement)).all()
        return [_to_bucket(row, group_by) for row in rows]

    def _bucket(self, granularity: Granularity) -> ColumnElement[datetime]:
        """The start of the record's bucket, as an expression both SELECT and GROUP BY
        can repeat verbatim (literals, not bind parameters, or PostgreSQL would see two
        different expressions)."""
        unit = Granularity(granularity)
        if self._connector.backend is Backend.POSTGRESQL:
            expression: ColumnElement[Any] = func.date_trunc(
                literal_column(f"'{unit.value}'"), _t.c.occurred_at, literal_column("'UTC'")
            )
        else:
            cut, rest = _SQLITE_BUCKETS[unit]
            prefix = func.substr(
                _t.c.occurred_at, literal_column("1"), literal_column(str(cut)), type_=String
            )
            expression = prefix.concat(literal_column(f"'{rest}'", String))
        return type_coerce(expression, UtcDateTime).label("bucket_start")


def _without_nul(value: Any) -> Any:
    return value.replace("\x00", "\ufffd") if isinstance(value, str) else value


def _sqlite_time(value: datetime) -> str:
    return as_utc(value).isoformat(timespec="microseconds")


def _to_bucket(row: Row[Any], group_by: Sequence[Dimension]) -> UsageBucket:
    mapping = row._mapping
    dimension = {d: mapping[_DIMENSION_COLUMNS[d].name] for d in group_by}
    return UsageBucket(
        bucket_start=mapping["bucket_start"],
        organization_id=dimension.get(Dimension.ORGANIZATION),
        project_id=dimension.get(Dimension.PROJECT),
        api_key_id=dimension.get(Dimension.KEY),
        model=dimension.get(Dimension.MODEL),
        requests=int(mapping["requests"]),
        prompt_tokens=int(mapping["prompt_tokens"]),
        completion_tokens=int(mapping["completion_tokens"]),
        cached_tokens=int(mapping["cached_tokens"]),
        reasoning_tokens=int(mapping["reasoning_tokens"]),
        cost_micros=int(mapping["cost_micros"]),
        estimated_requests=int(mapping["estimated_requests"]),
        error_requests=int(mapping["error_requests"]),
    )
