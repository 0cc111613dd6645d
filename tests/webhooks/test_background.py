"""The billing lease (one process works at a time) and usage summaries."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import orjson

from lockgate.controlplane.actions import SYSTEM, AdminActions
from lockgate.store import Store
from lockgate.store.repositories.usage import Granularity
from lockgate.webhooks.background import LEASE_NAME, BillingWork
from lockgate.webhooks.model import EventType
from lockgate.webhooks.outbox import event_body
from lockgate.webhooks.spec import BudgetsSpec, WebhooksSpec
from lockgate.webhooks.summaries import UsageSummaries, last_complete_bucket
from tests.metering.budget_support import spend


async def test_one_holder_at_a_time_and_a_successor_after_it_leaves(store: Store) -> None:
    now = datetime.now(UTC)
    later = now + timedelta(seconds=30)
    assert await store.leases.acquire("test-lease", holder="a", now=now, until=later)
    assert not await store.leases.acquire("test-lease", holder="b", now=now, until=later)
    assert await store.leases.acquire("test-lease", holder="a", now=now, until=later), "renew"
    # Expired: taken over.
    assert await store.leases.acquire(
        "test-lease", holder="b", now=later, until=later + timedelta(seconds=30)
    )
    await store.leases.release("test-lease", holder="a")  # not a's any more: no effect
    assert not await store.leases.acquire("test-lease", holder="a", now=later, until=later)
    await store.leases.release("test-lease", holder="b")
    assert await store.leases.acquire("test-lease", holder="a", now=later, until=later)


async def _eventually(check: Callable[[], bool]) -> None:
    for _ in range(250):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("never happened within 5 s")


async def test_racing_replicas_elect_exactly_one_billing_worker(store: Store) -> None:
    budgets = BudgetsSpec(evaluate_interval_s=60, lease_ttl_s=0.6)
    webhooks = WebhooksSpec(poll_interval_s=0.02)
    works = [BillingWork(store, None, budgets, webhooks, holder=f"w{i}") for i in range(3)]
    for work in works:
        work.start()
    try:
        await _eventually(lambda: sum(w.is_leader for w in works) == 1)
        await asyncio.sleep(0.3)
        assert sum(w.is_leader for w in works) == 1
        leader = next(w for w in works if w.is_leader)
        await leader.close()  # gives the lease back
        await _eventually(lambda: any(w.is_leader for w in works if w is not leader))
    finally:
        for work in works:
            await work.close()
    assert LEASE_NAME == "lockgate.billing"


async def test_a_usage_summary_is_written_once_per_organisation_and_bucket(
    store: Store, actions: AdminActions
) -> None:
    org = await actions.create_organization(SYSTEM, f"acme-{secrets.token_hex(4)}")
    project = await actions.create_project(SYSTEM, org.id, "main")
    hook, _ = await actions.create_subscription(
        SYSTEM, org.id, url="http://127.0.0.1:9/", event_types=[EventType.USAGE_SUMMARY_HOURLY]
    )
    now = datetime(2026, 3, 14, 15, 5, tzinfo=UTC)
    start, end = last_complete_bucket(Granularity.HOUR, now, timedelta(seconds=120))
    assert (start, end) == (
        datetime(2026, 3, 14, 14, tzinfo=UTC),
        datetime(2026, 3, 14, 15, tzinfo=UTC),
    )
    await spend(store, org.id, project.id, 1_250_000, start + timedelta(minutes=10))
    await spend(store, org.id, project.id, 250_000, start + timedelta(minutes=50))
    await spend(store, org.id, project.id, 9_000_000, end)  # the next hour: not in it
    summaries = UsageSummaries(store, delay_s=120, clock=lambda: now)
    assert await summaries.run_once() == 1
    assert await summaries.run_once() == 0
    (delivery,) = await store.webhooks.list_deliveries(organization_id=org.id)
    assert delivery.subscription_id == hook.id
    event = await store.webhooks.get_event(delivery.event_id, organization_id=org.id)
    body = orjson.loads(event_body(event))
    assert body["type"] == "usage.summary.hourly"
    data = body["data"]
    assert data["start"] == "2026-03-14T14:00:00Z"
    assert data["totals"]["requests"] == 2
    assert data["totals"]["cost"] == "1.500000"
    assert data["projects"] == [
        {
            "project_id": project.id,
            "requests": 2,
            "prompt_tokens": 20,
            "completion_tokens": 10,
            "cached_tokens": 0,
            "reasoning_tokens": 0,
            "cost_micros": 1_500_000,
            "estimated_requests": 0,
            "error_requests": 0,
            "cost": "1.500000",
        }
    ]
