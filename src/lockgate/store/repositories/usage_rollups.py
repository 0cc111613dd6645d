"""Keeping the roll-ups equal to the ledger: the flusher's insert adds to them, exactly once.

The contract: after any sequence of ``UsageRecords.insert_many`` calls — batches
re-sent after a crash, overlapping batches, concurrent flushers — each roll-up
row equals the sum of the records in its bucket. That holds because only the
records an insert *actually added* are summed into the roll-ups, in the same
transaction as the insert:

* PostgreSQL: one statement. The insert's ``RETURNING`` (which yields only the
  rows ``ON CONFLICT (record_id) DO NOTHING`` did not skip) feeds three more
  data-modifying CTEs that upsert the hourly, daily and monthly sums
  (``ON CONFLICT … DO UPDATE SET n = n + EXCLUDED.n``). Rows are upserted in key
  order, so two flushers touching the same buckets lock them in the same order.
* SQLite: the write transaction is exclusive (``BEGIN IMMEDIATE``), so the
  records already present are read first, the batch inserted, and the sums of
  the new ones computed here and upserted with ``executemany``.

Roll-up dimensions hold ``''`` for none (see ``schema_reporting``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy.ext.asyncio import AsyncConnection

from lockgate.metering.record import UsageRecord
from lockgate.store.columns import as_utc
from lockgate.store.schema_reporting import (
    ROLLUP_DIMENSIONS,
    ROLLUP_MEASURES,
    usage_push_queue,
    usage_rollup_daily,
    usage_rollup_hourly,
    usage_rollup_monthly,
)

# (table, PostgreSQL date_trunc unit), finest first.
ROLLUP_LEVELS: Final = (
    (usage_rollup_hourly, "hour"),
    (usage_rollup_daily, "day"),
    (usage_rollup_monthly, "month"),
)
_KEY = ("organization_id", "bucket_start", *ROLLUP_DIMENSIONS[1:])
_COLUMNS = (*_KEY, *ROLLUP_MEASURES)
# Only these of a record's columns matter to the roll-ups (RETURNING keeps the row narrow).
RETURNED: Final = (
    "record_id",
    "occurred_at",
    *ROLLUP_DIMENSIONS,
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cost_micros",
    "is_estimated",
    "error_code",
)
_SQLITE_CHUNK = 500  # bound parameters per "which of these exist" query


def _upsert_tail(table: str) -> str:
    updates = ", ".join(f"{m} = {table}.{m} + EXCLUDED.{m}" for m in ROLLUP_MEASURES)
    return f"ON CONFLICT ({', '.join(_KEY)}) DO UPDATE SET {updates}"


def postgres_rollup_ctes(source: str) -> str:
    """``, hourly AS (…), daily AS (…), monthly AS (…)`` summing the CTE ``source``."""
    parts = []
    for table, unit in ROLLUP_LEVELS:
        select = (
            f"SELECT coalesce(organization_id, ''), date_trunc('{unit}', occurred_at, 'UTC'), "  # noqa: S608
            "coalesce(project_id, ''), coalesce(api_key_id, ''), model, coalesce(deployment, ''), "
            "count(*), sum(prompt_tokens), sum(completion_tokens), sum(cached_tokens), "
            "sum(reasoning_tokens), sum(cost_micros), "
            "count(*) FILTER (WHERE is_estimated), count(*) FILTER (WHERE error_code IS NOT NULL) "
            f"FROM {source} GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 1, 2, 3, 4, 5, 6"
        )
        parts.append(
            f", {unit}ly AS (INSERT INTO {table.name} ({', '.join(_COLUMNS)}) {select} "
            f"{_upsert_tail(table.name)} RETURNING 1)"
        )
    return "".join(parts)


def postgres_queue_cte(source: str) -> str:
    return (
        f", queued AS (INSERT INTO {usage_push_queue.name} (record_id) "  # noqa: S608
        f"SELECT record_id FROM {source} ON CONFLICT (record_id) DO NOTHING RETURNING 1)"
    )


# -- SQLite ---------------------------------------------------------------------


async def sqlite_existing(conn: AsyncConnection, record_ids: Sequence[str]) -> set[str]:
    """Which of ``record_ids`` the ledger already has (inside the write transaction)."""
    found: set[str] = set()
    for i in range(0, len(record_ids), _SQLITE_CHUNK):
        chunk = list(record_ids[i : i + _SQLITE_CHUNK])
        marks = ", ".join("?" * len(chunk))
        result = await conn.exec_driver_sql(
            f"SELECT record_id FROM usage_records WHERE record_id IN ({marks})",  # noqa: S608
            tuple(chunk),
        )
        found.update(row[0] for row in result)
    return found


def rollup_deltas(records: Iterable[UsageRecord]) -> list[dict[tuple[Any, ...], list[int]]]:
    """Per level (hourly, daily, monthly): roll-up key → the measures to add.

    The records are summed once, per hour (the flusher's per-record cost: one dict
    update); days and months are summed from the hours, which are far fewer.
    """
    hourly: dict[tuple[Any, ...], list[int]] = {}
    hours: dict[tuple[int, int, int, int], datetime] = {}
    for r in records:
        when = r.occurred_at
        if when.tzinfo is not UTC:
            when = as_utc(when)
        hour_of = (when.year, when.month, when.day, when.hour)
        hour = hours.get(hour_of)
        if hour is None:
            hour = hours[hour_of] = when.replace(minute=0, second=0, microsecond=0)
        key = (
            r.organization_id or "",
            hour,
            r.project_id or "",
            r.api_key_id or "",
            r.model,
            r.deployment or "",
        )
        found = hourly.get(key)
        if found is None:
            hourly[key] = [
                1,
                r.prompt_tokens,
                r.completion_tokens,
                r.cached_tokens,
                r.reasoning_tokens,
                r.cost_micros,
                1 if r.is_estimated else 0,
                0 if r.error_code is None else 1,
            ]
            continue
        found[0] += 1
        found[1] += r.prompt_tokens
        found[2] += r.completion_tokens
        found[3] += r.cached_tokens
        found[4] += r.reasoning_tokens
        found[5] += r.cost_micros
        found[6] += 1 if r.is_estimated else 0
        found[7] += 0 if r.error_code is None else 1
    daily = _coarser(hourly, lambda t: t.replace(hour=0))
    return [hourly, daily, _coarser(daily, lambda t: t.replace(day=1))]


def _coarser(
    sums: dict[tuple[Any, ...], list[int]], truncate: Callable[[datetime], datetime]
) -> dict[tuple[Any, ...], list[int]]:
    coarse: dict[tuple[Any, ...], list[int]] = {}
    for key, measures in sums.items():
        wider = (key[0], truncate(key[1]), *key[2:])
        found = coarse.get(wider)
        if found is None:
            coarse[wider] = list(measures)
        else:
            for i, value in enumerate(measures):
                found[i] += value
    return coarse


async def sqlite_add_to_rollups(conn: AsyncConnection, records: Sequence[UsageRecord]) -> None:
    """Add ``records`` (new to the ledger, in this transaction) to the three roll-ups."""
    for (table, _), sums in zip(ROLLUP_LEVELS, rollup_deltas(records), strict=True):
        if not sums:
            continue
        statement = (
            f"INSERT INTO {table.name} ({', '.join(_COLUMNS)}) "  # noqa: S608 - constants
            f"VALUES ({', '.join('?' * len(_COLUMNS))}) {_upsert_tail(table.name)}"
        ).replace("EXCLUDED.", "excluded.")
        rows = [
            (key[0], _sqlite_time(key[1]), *key[2:], *measures)
            for key, measures in sorted(sums.items(), key=lambda item: item[0])
        ]
        await conn.exec_driver_sql(statement, rows)


async def sqlite_queue_for_push(conn: AsyncConnection, record_ids: Sequence[str]) -> None:
    if record_ids:
        await conn.exec_driver_sql(
            f"INSERT INTO {usage_push_queue.name} (record_id) VALUES (?) "  # noqa: S608
            "ON CONFLICT (record_id) DO NOTHING",
            [(record_id,) for record_id in record_ids],
        )


def _sqlite_time(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds")
