"""Aggregates: UTC hour/day/month buckets, breakdowns, tenant filtering, on both backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from lockgate.store import Invalid, Store
from lockgate.store.repositories.usage import Dimension, Granularity
from tests.metering.support import record

T0 = datetime(2026, 1, 31, 22, 59, 59, 999_999, tzinfo=UTC)  # the last µs of an hour
START, END = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC)


@pytest.fixture
async def ledger(store: Store) -> Store:
    await store.usage.insert_many(
        [
            record("r1", at=T0, prompt=10, completion=1, cost_micros=100),
            record(
                "r2", at=T0 + timedelta(microseconds=1), prompt=20, completion=2, cost_micros=200
            ),
            record("r3", at=T0 + timedelta(hours=1, minutes=30), model="mistral", prompt=30),
            record("r4", at=datetime(2026, 2, 1, 0, 0, tzinfo=UTC), key="key_b", prompt=40),
            record(
                "r5",
                at=datetime(2026, 3, 15, 8, tzinfo=UTC),
                project="prj_b",
                key="key_c",
                prompt=50,
                is_estimated=True,
            ),
            record(
                "r6",
                at=datetime(2026, 3, 31, 23, 59, tzinfo=UTC),
                error_code="upstream_unavailable",
                prompt=60,
            ),
            record("other-org", at=T0, org="org_b", project="prj_x", key="key_x", prompt=1_000),
            record("too-late", at=END, prompt=10_000),
        ]
    )
    return store


async def test_hours_split_at_the_exact_boundary(ledger: Store) -> None:
    buckets = await ledger.usage.aggregate(
        organization_id="org_a", start=START, end=END, granularity=Granularity.HOUR
    )
    assert [(b.bucket_start, b.requests, b.prompt_tokens) for b in buckets] == [
        (datetime(2026, 1, 31, 22, tzinfo=UTC), 1, 10),
        (datetime(2026, 1, 31, 23, tzinfo=UTC), 1, 20),
        (datetime(2026, 2, 1, 0, tzinfo=UTC), 2, 70),
        (datetime(2026, 3, 15, 8, tzinfo=UTC), 1, 50),
        (datetime(2026, 3, 31, 23, tzinfo=UTC), 1, 60),
    ]


async def test_days_and_months_with_a_breakdown(ledger: Store) -> None:
    days = await ledger.usage.aggregate(
        organization_id="org_a",
        start=START,
        end=END,
        granularity=Granularity.DAY,
        group_by=[Dimension.MODEL],
    )
    assert [(b.bucket_start.date().isoformat(), b.model, b.requests) for b in days] == [
        ("2026-01-31", "llama", 2),
        ("2026-02-01", "llama", 1),
        ("2026-02-01", "mistral", 1),
        ("2026-03-15", "llama", 1),
        ("2026-03-31", "llama", 1),
    ]
    months = await ledger.usage.aggregate(
        organization_id="org_a",
        start=START,
        end=END,
        granularity=Granularity.MONTH,
        group_by=[Dimension.PROJECT, Dimension.KEY],
    )
    assert [(b.bucket_start.month, b.project_id, b.api_key_id, b.requests) for b in months] == [
        (1, "prj_a", "key_a", 2),
        (2, "prj_a", "key_a", 1),
        (2, "prj_a", "key_b", 1),
        (3, "prj_a", "key_a", 1),
        (3, "prj_b", "key_c", 1),
    ]
    january = months[0]
    assert (january.prompt_tokens, january.completion_tokens, january.cost_micros) == (30, 3, 300)
    march = [b for b in months if b.bucket_start.month == 3]
    assert [(b.estimated_requests, b.error_requests) for b in march] == [(0, 1), (1, 0)]
    assert january.organization_id is None  # not grouped by organisation


async def test_tenants_and_filters(ledger: Store) -> None:
    everyone = await ledger.usage.aggregate(
        organization_id=None,
        start=START,
        end=END,
        granularity=Granularity.MONTH,
        group_by=[Dimension.ORGANIZATION],
    )
    assert [(b.bucket_start.month, b.organization_id, b.prompt_tokens) for b in everyone] == [
        (1, "org_a", 30),
        (1, "org_b", 1_000),
        (2, "org_a", 70),
        (3, "org_a", 110),
    ]
    other = await ledger.usage.aggregate(
        organization_id="org_b", start=START, end=END, granularity=Granularity.MONTH
    )
    assert [b.prompt_tokens for b in other] == [1_000]
    one_key = await ledger.usage.aggregate(
        organization_id="org_a",
        start=START,
        end=END,
        granularity=Granularity.MONTH,
        api_key_id="key_b",
    )
    assert [b.prompt_tokens for b in one_key] == [40]
    # Another organisation's key through org_a's view: nothing.
    assert (
        await ledger.usage.aggregate(
            organization_id="org_a",
            start=START,
            end=END,
            granularity=Granularity.MONTH,
            api_key_id="key_x",
        )
        == []
    )


async def test_ranges_are_half_open_and_need_aware_times(ledger: Store) -> None:
    cet = timezone(timedelta(hours=1))
    # 2026-02-01 00:00 CET is 2026-01-31 23:00 UTC: only r2 and later.
    buckets = await ledger.usage.aggregate(
        organization_id="org_a",
        start=datetime(2026, 2, 1, 0, 0, tzinfo=cet),
        end=datetime(2026, 2, 1, 1, 0, tzinfo=UTC),
        granularity=Granularity.DAY,
    )
    assert [(b.bucket_start.day, b.requests) for b in buckets] == [(31, 1), (1, 2)]
    with pytest.raises(Invalid):
        await ledger.usage.aggregate(
            organization_id="org_a",
            start=datetime(2026, 1, 1),
            end=END,
            granularity=Granularity.DAY,
        )


async def test_listing_pages_through_a_range_in_order(ledger: Store) -> None:
    seen = []
    after = None
    while True:
        page = await ledger.usage.list(
            organization_id="org_a", start=START, end=END, limit=2, after=after
        )
        seen.extend(r.record_id for r in page)
        if len(page) < 2:
            break
        after = (page[-1].occurred_at, page[-1].record_id)
    assert seen == ["r1", "r2", "r4", "r3", "r5", "r6"]  # by time, not by id
    assert await ledger.usage.get("other-org", organization_id="org_a") is None
    found = await ledger.usage.get("other-org", organization_id="org_b")
    assert found is not None
    assert found.prompt_tokens == 1_000
