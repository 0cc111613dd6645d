"""Roll-ups: maintained by the insert, exactly once, and reports from them equal a raw scan.

The oracle is plain Python over the records inserted; the roll-ups must agree
with it after re-sent and overlapping batches, for any range and granularity,
on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from lockgate.metering.record import UsageRecord
from lockgate.store import Store
from lockgate.store.repositories.usage import Dimension, Granularity, UsageBucket
from lockgate.store.repositories.usage_reports import Piece, floor, plan
from tests.metering.support import record

T0 = datetime(2026, 1, 30, 20, 0, tzinfo=UTC)


def _random_records(seed: int, count: int) -> list[UsageRecord]:
    rng = random.Random(seed)
    records = []
    for i in range(count):
        at = T0 + timedelta(seconds=rng.randrange(0, 70 * 86400), microseconds=rng.randrange(10**6))
        org = rng.choice(["org_a", "org_b", None])
        records.append(
            record(
                f"r{seed}-{i:05d}",
                at=at,
                org=org,
                project=None if org is None else rng.choice(["prj_1", "prj_2"]),
                key=None if org is None else rng.choice(["key_1", "key_2", "key_3"]),
                model=rng.choice(["llama", "mistral"]),
                prompt=rng.randrange(0, 5000),
                completion=rng.randrange(0, 900),
                cost_micros=rng.randrange(0, 10**7),
                is_estimated=rng.random() < 0.1,
                error_code="upstream_error" if rng.random() < 0.1 else None,
            )
        )
    return records


def _oracle(
    records: Sequence[UsageRecord],
    *,
    organization_id: str | None,
    start: datetime,
    end: datetime,
    granularity: Granularity,
    group_by: Sequence[Dimension],
) -> list[tuple[object, ...]]:
    sums: dict[tuple[object, ...], list[int]] = defaultdict(lambda: [0] * 8)
    names = {
        Dimension.ORGANIZATION: "organization_id",
        Dimension.PROJECT: "project_id",
        Dimension.KEY: "api_key_id",
        Dimension.MODEL: "model",
        Dimension.DEPLOYMENT: "deployment",
    }
    for r in records:
        if organization_id is not None and r.organization_id != organization_id:
            continue
        if not start <= r.occurred_at < end:
            continue
        key = (floor(r.occurred_at, granularity), *(getattr(r, names[d]) for d in group_by))
        found = sums[key]
        for i, value in enumerate(
            (
                1,
                r.prompt_tokens,
                r.completion_tokens,
                r.cached_tokens,
                r.reasoning_tokens,
                r.cost_micros,
                int(r.is_estimated),
                int(r.error_code is not None),
            )
        ):
            found[i] += value
    return sorted(
        ((*k, *v) for k, v in sums.items()),
        key=lambda row: (row[0], *((v is None, v or "") for v in row[1 : 1 + len(group_by)])),
    )


def _rows(
    buckets: Sequence[UsageBucket], group_by: Sequence[Dimension]
) -> list[tuple[object, ...]]:
    names = {
        Dimension.ORGANIZATION: "organization_id",
        Dimension.PROJECT: "project_id",
        Dimension.KEY: "api_key_id",
        Dimension.MODEL: "model",
        Dimension.DEPLOYMENT: "deployment",
    }
    return [
        (
            b.bucket_start,
            *(getattr(b, names[d]) for d in group_by),
            b.requests,
            b.prompt_tokens,
            b.completion_tokens,
            b.cached_tokens,
            b.reasoning_tokens,
            b.cost_micros,
            b.estimated_requests,
            b.error_requests,
        )
        for b in buckets
    ]


async def test_reports_equal_a_scan_for_any_range_after_resent_batches(store: Store) -> None:
    records = _random_records(1, 600)
    # Batches as a flusher sends them, then re-sent (a crash after the commit) and
    # overlapping (a larger batch holding some of the same records).
    assert await store.usage.insert_many(records[:300]) == 300
    assert await store.usage.insert_many(records[:300]) == 0
    assert await store.usage.insert_many(records[250:450]) == 150
    assert await store.usage.insert_many([*records[440:], records[0]]) == 150
    rng = random.Random(7)
    cases = [
        (T0, T0 + timedelta(days=80), Granularity.MONTH, [Dimension.ORGANIZATION]),
        (T0, T0 + timedelta(days=80), Granularity.DAY, [Dimension.MODEL, Dimension.KEY]),
    ]
    for _ in range(14):
        a = T0 + timedelta(
            seconds=rng.randrange(-3600, 72 * 86400), microseconds=rng.randrange(10**6)
        )
        b = a + timedelta(seconds=rng.randrange(1, 40 * 86400))
        group_by = rng.sample(list(Dimension), rng.randrange(0, 3))
        cases.append((a, b, rng.choice(list(Granularity)), group_by))
    for start, end, granularity, group_by in cases:
        for org in (None, "org_a"):
            got = await store.usage.aggregate(
                organization_id=org,
                start=start,
                end=end,
                granularity=granularity,
                group_by=group_by,
            )
            expected = _oracle(
                records,
                organization_id=org,
                start=start,
                end=end,
                granularity=granularity,
                group_by=group_by,
            )
            assert _rows(got, group_by) == expected, (start, end, granularity, group_by, org)


async def test_concurrent_flushers_add_each_record_once(store: Store) -> None:
    records = _random_records(2, 400)
    # Eight flushers sending overlapping batches at once (the same buckets, shared records).
    batches = [records[i : i + 150] for i in range(0, 400, 50)]
    inserted = await asyncio.gather(*(store.usage.insert_many(b) for b in batches))
    assert sum(inserted) == 400
    expected = [
        len(records),
        sum(r.prompt_tokens for r in records),
        sum(r.completion_tokens for r in records),
        0,
        0,
        sum(r.cost_micros for r in records),
        sum(r.is_estimated for r in records),
        sum(r.error_code is not None for r in records),
    ]
    # Aligned ranges: each granularity reads its own roll-up table and nothing else.
    start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 5, 1, tzinfo=UTC)
    for granularity in Granularity:
        assert [p.source for p in plan(start, end, granularity)] == [granularity]
        buckets = await store.usage.aggregate(
            organization_id=None, start=start, end=end, granularity=granularity
        )
        totals = [
            sum(column) for column in zip(*(row[1:] for row in _rows(buckets, [])), strict=True)
        ]
        assert totals == expected, granularity


def test_a_plan_reads_whole_buckets_from_the_coarsest_roll_up() -> None:
    start = datetime(2026, 3, 3, 10, 30, tzinfo=UTC)
    end = datetime(2026, 5, 20, tzinfo=UTC)
    assert plan(start, end, Granularity.MONTH) == [
        Piece(
            Granularity.MONTH,
            datetime(2026, 4, 1, tzinfo=UTC),
            datetime(2026, 5, 1, tzinfo=UTC),
            None,
        ),
        Piece(
            Granularity.DAY,
            datetime(2026, 3, 4, tzinfo=UTC),
            datetime(2026, 4, 1, tzinfo=UTC),
            datetime(2026, 3, 1, tzinfo=UTC),
        ),
        Piece(
            Granularity.HOUR,
            datetime(2026, 3, 3, 11, tzinfo=UTC),
            datetime(2026, 3, 4, tzinfo=UTC),
            datetime(2026, 3, 1, tzinfo=UTC),
        ),
        Piece(None, start, datetime(2026, 3, 3, 11, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC)),
        Piece(
            Granularity.DAY,
            datetime(2026, 5, 1, tzinfo=UTC),
            datetime(2026, 5, 20, tzinfo=UTC),
            datetime(2026, 5, 1, tzinfo=UTC),
        ),
    ]
    # Aligned ranges are one query; an empty range none.
    aligned = plan(
        datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC), Granularity.MONTH
    )
    assert [p.source for p in aligned] == [Granularity.MONTH]
    assert plan(end, start, Granularity.DAY) == []
