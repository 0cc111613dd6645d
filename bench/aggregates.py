"""Usage aggregates over a large ledger: load N records into PostgreSQL, time the reports.

    .venv/bin/python -m bench.aggregates                    # 10 million records
    .venv/bin/python -m bench.aggregates --rows 1000000     # a quicker look
    .venv/bin/python -m bench.aggregates --keep             # leave the database for psql

What it does, in a database of its own (``lockgate_bench_<random>``, dropped at the end):

1. migrate to 0004 (the ledger, no roll-ups) and bulk-load ``--rows`` usage records with
   ``COPY`` (asyncpg ``copy_records_to_table``, generated as they stream, in time order);
2. migrate to head: migration 0005 builds the roll-ups from the records (timed: it is
   what an existing deployment's upgrade costs);
3. run representative reports through the repository (``store.usage.aggregate``, as
   the admin API and ``lockgate usage report`` do): one warm-up, then ``--repeat``
   timed runs, median and best printed; and, for comparison, the same report as one
   ``GROUP BY`` scan of the records (how aggregates were computed before roll-ups).

The data: a year (2025) of traffic from 20 organisations of Zipf-like sizes, 3
projects each, 2 keys per project; each key calls 2 of 8 models, each model on 2
deployments (80/20). So, as in real deployments, far fewer distinct
(key, model, deployment) series than records, which is what roll-ups exploit.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import secrets
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from alembic import command
from sqlalchemy.engine import Connection

from lockgate.store import Store
from lockgate.store.database import create_engine
from lockgate.store.migrate import alembic_config
from lockgate.store.repositories.usage import Dimension, Granularity
from lockgate.store.schema import usage_records

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
YEAR = datetime(2025, 1, 1, tzinfo=UTC)
END = datetime(2026, 1, 1, tzinfo=UTC)
MODELS = [f"model-{m}" for m in range(8)]
COLUMNS = list(usage_records.c.keys())


def _keys(rng: random.Random) -> list[tuple[str, str, str, float, list[str]]]:
    """(org, project, key, weight, models): 20 orgs of Zipf-like weight, 3x2 keys each."""
    keys = []
    for o in range(20):
        for p in range(3):
            for k in range(2):
                weight = 1.0 / (o + 1) * rng.uniform(0.5, 1.5)
                models = rng.sample(MODELS, 2)
                keys.append(
                    (f"org_{o:02d}", f"prj_{o:02d}_{p}", f"key_{o:02d}_{p}_{k}", weight, models)
                )
    return keys


async def _records(rows: int, seed: int) -> AsyncIterator[tuple[Any, ...]]:
    """``rows`` records in time order (cheap index inserts), as COPY wants them."""
    rng = random.Random(seed)
    keys = _keys(rng)
    weights = [k[3] for k in keys]
    step_us = (END - YEAR) / timedelta(microseconds=1) / rows
    picks = rng.choices(keys, weights, k=min(rows, 100_000))
    for i in range(rows):
        org, project, key, _, models = picks[i % len(picks)]
        model = models[i & 1]
        deployment = f"{model}-{'a' if rng.random() < 0.8 else 'b'}"
        prompt = rng.randrange(50, 4000)
        completion = rng.randrange(1, 800)
        failed = rng.random() < 0.01
        yield (
            f"ur_bench_{i:010d}",
            f"req-{i}",
            YEAR + timedelta(microseconds=int(i * step_us)),
            org,
            project,
            key,
            f"api_key:{key}",
            "chat.completions",
            model,
            f"{model}-v1",
            deployment,
            prompt,
            completion,
            prompt // 4,
            0,
            rng.random() < 0.005,
            502 if failed else 200,
            "upstream_error" if failed else None,
            "upstream" if failed else None,
            None,
            rng.uniform(50, 3000),
            i % 3 == 0,
            False,
            "bench-price",
            "USD",
            prompt * 150 + completion * 600,
        )
        if i % 50_000 == 0:
            await asyncio.sleep(0)


async def _alembic(url: str, revision: str) -> None:
    def run(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(run)
    finally:
        await engine.dispose()


async def _timed(run: Callable[[], Awaitable[Any]], repeat: int) -> tuple[float, float, Any]:
    result = await run()  # warm-up: plans cached, pages in the buffer cache
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        result = await run()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), min(times), result


def _reports(store: Store) -> list[tuple[str, Callable[[], Awaitable[Any]]]]:
    usage = store.usage
    june = (datetime(2025, 6, 1, tzinfo=UTC), datetime(2025, 7, 1, tzinfo=UTC))
    return [
        (
            "org_00 by day, June (30 buckets)",
            lambda: usage.aggregate(
                organization_id="org_00", start=june[0], end=june[1], granularity=Granularity.DAY
            ),
        ),
        (
            "org_00 by day x project, June",
            lambda: usage.aggregate(
                organization_id="org_00",
                start=june[0],
                end=june[1],
                granularity=Granularity.DAY,
                group_by=[Dimension.PROJECT],
            ),
        ),
        (
            "org_00 by month x model, 2025",
            lambda: usage.aggregate(
                organization_id="org_00",
                start=YEAR,
                end=END,
                granularity=Granularity.MONTH,
                group_by=[Dimension.MODEL],
            ),
        ),
        (
            "everyone by month x org, 2025",
            lambda: usage.aggregate(
                organization_id=None,
                start=YEAR,
                end=END,
                granularity=Granularity.MONTH,
                group_by=[Dimension.ORGANIZATION],
            ),
        ),
        (
            "org_00 by hour x key, one week",
            lambda: usage.aggregate(
                organization_id="org_00",
                start=datetime(2025, 6, 2, tzinfo=UTC),
                end=datetime(2025, 6, 9, tzinfo=UTC),
                granularity=Granularity.HOUR,
                group_by=[Dimension.KEY],
            ),
        ),
        (
            "org_00 by day, 3rd 10:30 - 20th 17:45 (ragged)",
            lambda: usage.aggregate(
                organization_id="org_00",
                start=datetime(2025, 6, 3, 10, 30, tzinfo=UTC),
                end=datetime(2025, 6, 20, 17, 45, tzinfo=UTC),
                granularity=Granularity.DAY,
            ),
        ),
    ]


_RAW_SCANS = {
    "org_00 by day, June (30 buckets)": (
        "SELECT date_trunc('day', occurred_at, 'UTC'), count(*), sum(prompt_tokens), "
        "sum(completion_tokens), sum(cost_micros) FROM usage_records WHERE organization_id = "
        "'org_00' AND occurred_at >= '2025-06-01Z' AND occurred_at < '2025-07-01Z' GROUP BY 1"
    ),
    "org_00 by month x model, 2025": (
        "SELECT date_trunc('month', occurred_at, 'UTC'), model, count(*), sum(prompt_tokens), "
        "sum(completion_tokens), sum(cost_micros) FROM usage_records WHERE organization_id = "
        "'org_00' AND occurred_at >= '2025-01-01Z' AND occurred_at < '2026-01-01Z' GROUP BY 1, 2"
    ),
    "everyone by month x org, 2025": (
        "SELECT date_trunc('month', occurred_at, 'UTC'), organization_id, count(*), "
        "sum(prompt_tokens), sum(cost_micros) FROM usage_records "
        "WHERE occurred_at >= '2025-01-01Z' AND occurred_at < '2026-01-01Z' GROUP BY 1, 2"
    ),
}


async def main(args: argparse.Namespace) -> None:
    name = f"lockgate_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(args.admin_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    dsn = args.admin_dsn.rsplit("/", 1)[0] + f"/{name}"
    print(f"database {name}: {args.rows:,} records")
    try:
        await _alembic(dsn, "0004_usage_ledger")
        started = time.perf_counter()
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("SET synchronous_commit = off")
            await conn.copy_records_to_table(
                "usage_records", records=_records(args.rows, args.seed), columns=COLUMNS
            )
            await conn.execute("ANALYZE usage_records")
        finally:
            await conn.close()
        load_s = time.perf_counter() - started
        print(f"COPY {args.rows:,} records: {load_s:.0f} s ({args.rows / load_s:,.0f} rows/s)")
        started = time.perf_counter()
        await _alembic(dsn, "heads")
        print(f"migration 0005 (roll-ups from the records): {time.perf_counter() - started:.0f} s")
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("ANALYZE")
            for table in ("usage_rollup_hourly", "usage_rollup_daily", "usage_rollup_monthly"):
                count = await conn.fetchval(f"SELECT count(*) FROM {table}")  # noqa: S608
                print(f"  {table}: {count:,} rows")
            store = await Store.open(dsn)
            try:
                print(f"\n{'report':<48} {'median ms':>10} {'best ms':>9} {'buckets':>8}")
                for title, run in _reports(store):
                    median, best, result = await _timed(run, args.repeat)
                    print(f"{title:<48} {median:>10.1f} {best:>9.1f} {len(result):>8}")
                    raw = _RAW_SCANS.get(title)
                    if raw is not None and not args.no_raw:
                        median, best, rows = await _timed(lambda q=raw: conn.fetch(q), 1)
                        print(
                            f"{'  same, one GROUP BY scan of the records':<48} "
                            f"{median:>10.1f} {best:>9.1f} {len(rows):>8}"
                        )
            finally:
                await store.close()
        finally:
            await conn.close()
    finally:
        if args.keep:
            print(f"kept database {name}")
        else:
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.aggregates", description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000_000, help="records (default 10M)")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per report")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--admin-dsn", default=ADMIN_DSN, help="a database to CREATE from")
    parser.add_argument("--keep", action="store_true", help="do not drop the database")
    parser.add_argument("--no-raw", action="store_true", help="skip the raw-scan comparison")
    args = parser.parse_args()
    if not 1 <= args.rows <= 200_000_000 or not 1 <= args.repeat <= 100:
        parser.error("--rows must be 1..200M and --repeat 1..100")
    return args


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
