"""Usage aggregates read from the roll-ups, exact for any time range.

A report asks for ``[start, end)`` in UTC ``granularity`` buckets. The buckets
the range covers whole are read from that granularity's roll-up (one row per
bucket and dimensions, however many records). A range that starts or ends
inside a bucket leaves a partial bucket at each end; each is summed from the
next finer roll-up for the whole sub-buckets it contains, and so on down to the
raw records for what is left inside an hour. A month report from 10:30 on the
3rd to the 20th reads: days 4-19 from the daily roll-up, hours 11-23 of the 3rd
from the hourly one, and 10:30-11:00 from the records. So results equal a scan
of the records, at the cost of at most seven small index-range queries.

``organization_id`` is the tenant, applied to every query (None: the whole
deployment, for superadmins).
"""

from __future__ import annotations

import calendar
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, Table, case, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from lockgate.store.columns import as_utc
from lockgate.store.repositories.base import tenant_filter
from lockgate.store.schema import usage_records
from lockgate.store.schema_reporting import (
    ROLLUP_MEASURES,
    usage_rollup_daily,
    usage_rollup_hourly,
    usage_rollup_monthly,
)


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
    DEPLOYMENT = "deployment"


_COLUMN_NAMES = {
    Dimension.ORGANIZATION: "organization_id",
    Dimension.PROJECT: "project_id",
    Dimension.KEY: "api_key_id",
    Dimension.MODEL: "model",
    Dimension.DEPLOYMENT: "deployment",
}
_TABLES: dict[Granularity, Table] = {
    Granularity.HOUR: usage_rollup_hourly,
    Granularity.DAY: usage_rollup_daily,
    Granularity.MONTH: usage_rollup_monthly,
}
_FINER: dict[Granularity, Granularity | None] = {
    Granularity.MONTH: Granularity.DAY,
    Granularity.DAY: Granularity.HOUR,
    Granularity.HOUR: None,  # below an hour: the records themselves
}


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
    deployment: str | None = None


@dataclass(frozen=True, slots=True)
class Filters:
    """The tenant and the optional narrowing filters of one report."""

    organization_id: str | None
    project_id: str | None = None
    api_key_id: str | None = None
    model: str | None = None


# -- bucket arithmetic (UTC) ------------------------------------------------------


def floor(when: datetime, unit: Granularity) -> datetime:
    when = as_utc(when)
    if unit is Granularity.HOUR:
        return when.replace(minute=0, second=0, microsecond=0)
    if unit is Granularity.DAY:
        return when.replace(hour=0, minute=0, second=0, microsecond=0)
    return when.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_start(start: datetime, unit: Granularity) -> datetime:
    """The start of the bucket after the one starting at ``start``."""
    if unit is Granularity.HOUR:
        return start + timedelta(hours=1)
    if unit is Granularity.DAY:
        return start + timedelta(days=1)
    days = calendar.monthrange(start.year, start.month)[1]
    return start + timedelta(days=days)


def ceil(when: datetime, unit: Granularity) -> datetime:
    start = floor(when, unit)
    return start if start == as_utc(when) else next_start(start, unit)


@dataclass(frozen=True, slots=True)
class Piece:
    """One query of a plan: ``[start, end)`` from ``source`` (None: the records).

    ``bucket`` None: group by the source's own buckets (``source`` is the report's
    granularity); else the whole piece lies in that one report bucket.
    """

    source: Granularity | None
    start: datetime
    end: datetime
    bucket: datetime | None


def plan(start: datetime, end: datetime, granularity: Granularity) -> list[Piece]:
    """The queries that sum ``[start, end)`` into ``granularity`` buckets exactly."""
    start, end = as_utc(start), as_utc(end)
    if start >= end:
        return []
    first, last = ceil(start, granularity), floor(end, granularity)
    pieces: list[Piece] = []
    if first <= last:  # the range crosses at least one bucket boundary
        if first < last:
            pieces.append(Piece(granularity, first, last, None))
        edges = [(start, first), (last, end)]
    else:  # start and end lie inside one bucket
        edges = [(start, end)]
    for a, b in edges:
        if a < b:
            pieces.extend(_within(a, b, _FINER[granularity], floor(a, granularity)))
    return pieces


def _within(
    a: datetime, b: datetime, level: Granularity | None, bucket: datetime
) -> Iterator[Piece]:
    """``[a, b)``, inside one report bucket, from the coarsest source that fits."""
    if level is None:
        yield Piece(None, a, b, bucket)
        return
    first, last = ceil(a, level), floor(b, level)
    if first > last:  # inside one sub-bucket
        yield from _within(a, b, _FINER[level], bucket)
        return
    if first < last:
        yield Piece(level, first, last, bucket)
    for x, y in ((a, first), (last, b)):
        if x < y:
            yield from _within(x, y, _FINER[level], bucket)


# -- queries ----------------------------------------------------------------------


def _piece_query(piece: Piece, dimensions: Sequence[Dimension], filters: Filters) -> Any:
    names = [_COLUMN_NAMES[d] for d in dimensions]
    if piece.source is None:
        t = usage_records
        time_column = t.c.occurred_at
        measures: list[ColumnElement[Any]] = [
            func.count().label("requests"),
            *(
                func.sum(t.c[m]).label(m)
                for m in ROLLUP_MEASURES
                if m not in ("requests", "estimated_requests", "error_requests")
            ),
            func.sum(case((t.c.is_estimated, 1), else_=0)).label("estimated_requests"),
            func.sum(case((t.c.error_code.is_not(None), 1), else_=0)).label("error_requests"),
        ]
    else:
        t = _TABLES[piece.source]
        time_column = t.c.bucket_start
        measures = [func.sum(t.c[m]).label(m) for m in ROLLUP_MEASURES]
    grouped = [t.c[name] for name in names]
    if piece.bucket is None:
        grouped.insert(0, time_column)
    statement = (
        select(*grouped, *measures)
        .where(
            tenant_filter(t.c.organization_id, filters.organization_id),
            time_column >= piece.start,
            time_column < piece.end,
        )
        .group_by(*grouped)
    )
    for name, value in (
        ("project_id", filters.project_id),
        ("api_key_id", filters.api_key_id),
        ("model", filters.model),
    ):
        if value is not None:
            statement = statement.where(t.c[name] == value)
    return statement


async def aggregate(
    conn: AsyncConnection,
    *,
    start: datetime,
    end: datetime,
    granularity: Granularity,
    group_by: Sequence[Dimension],
    filters: Filters,
) -> list[UsageBucket]:
    """Run the plan on ``conn`` and merge its pieces into buckets, ordered by bucket,
    then dimensions (None last)."""
    granularity = Granularity(granularity)
    dimensions = list(dict.fromkeys(Dimension(d) for d in group_by))
    sums: dict[tuple[Any, ...], list[int]] = {}
    for piece in plan(start, end, granularity):
        rows = (await conn.execute(_piece_query(piece, dimensions, filters))).all()
        for row in rows:
            values = tuple(row)
            if piece.bucket is None:
                bucket, values = as_utc(values[0]), values[1:]
            else:
                bucket = piece.bucket
            dims = tuple(v or None for v in values[: len(dimensions)])  # '' is none
            measures = [int(v or 0) for v in values[len(dimensions) :]]
            if not measures[0]:
                continue  # an aggregate without GROUP BY answers one row even for no records
            found = sums.get((bucket, *dims))
            if found is None:
                sums[(bucket, *dims)] = measures
            else:
                for i, value in enumerate(measures):
                    found[i] += value
    ordered = sorted(
        sums.items(),
        key=lambda item: (item[0][0], *((v is None, v or "") for v in item[0][1:])),
    )
    return [_bucket(key, measures, dimensions) for key, measures in ordered]


def _bucket(key: tuple[Any, ...], measures: list[int], dimensions: list[Dimension]) -> UsageBucket:
    named = dict(zip(dimensions, key[1:], strict=True))
    requests, prompt, completion, cached, reasoning, cost, estimated, errors = measures
    return UsageBucket(
        bucket_start=key[0].astimezone(UTC),
        organization_id=named.get(Dimension.ORGANIZATION),
        project_id=named.get(Dimension.PROJECT),
        api_key_id=named.get(Dimension.KEY),
        model=named.get(Dimension.MODEL),
        requests=requests,
        prompt_tokens=prompt,
        completion_tokens=completion,
        cached_tokens=cached,
        reasoning_tokens=reasoning,
        cost_micros=cost,
        estimated_requests=estimated,
        error_requests=errors,
        deployment=named.get(Dimension.DEPLOYMENT),
    )
