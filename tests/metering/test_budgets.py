"""The budget evaluator: spend from the ledger, thresholds fired exactly once per period,
across restarts and across evaluators racing on one database (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import select

from lockgate.controlplane.actions import SYSTEM, AdminActions
from lockgate.invalidation.inprocess import InProcessBus
from lockgate.metering.budgets import (
    BudgetAction,
    BudgetSpec,
    Period,
    crossed,
    period_bounds,
    to_micros,
)
from lockgate.metering.budgets_evaluator import BudgetEvaluator
from lockgate.store import Store
from lockgate.store.database import create_engine
from lockgate.store.errors import Conflict, NotFound
from lockgate.store.schema_billing import webhook_events
from lockgate.webhooks.model import EventType
from tests.metering.budget_support import spend, unique

NOW = datetime(2026, 3, 14, 15, 9, 26, tzinfo=UTC)
CROSSED = EventType.BUDGET_THRESHOLD_CROSSED


def at(moment: datetime) -> Callable[[], datetime]:
    return lambda: moment


def test_periods_are_utc_calendar_days_and_months() -> None:
    assert period_bounds(Period.DAY, NOW) == (
        datetime(2026, 3, 14, tzinfo=UTC),
        datetime(2026, 3, 15, tzinfo=UTC),
    )
    assert period_bounds(Period.MONTH, NOW) == (
        datetime(2026, 3, 1, tzinfo=UTC),
        datetime(2026, 4, 1, tzinfo=UTC),
    )
    december = datetime(2026, 12, 31, 23, 59, tzinfo=UTC)
    assert period_bounds(Period.MONTH, december)[1] == datetime(2027, 1, 1, tzinfo=UTC)


def test_thresholds_compare_exactly_in_integers() -> None:
    assert crossed((50, 80, 100), 799_999, 1_000_000) == [50]
    assert crossed((50, 80, 100), 800_000, 1_000_000) == [50, 80]
    assert crossed((50, 80, 100), 1_000_000, 1_000_000) == [50, 80, 100]
    assert crossed((150,), 1_499_999, 1_000_000) == []
    assert to_micros(Decimal("0.0000005")) == 0
    assert to_micros(Decimal("12.345678")) == 12_345_678
    spec = BudgetSpec(amount=Decimal("10"), thresholds=[100, 50])
    assert spec.thresholds == [50, 100]
    assert spec.action is BudgetAction.ALERT_ONLY
    with pytest.raises(ValueError, match="distinct"):
        BudgetSpec(amount=Decimal("10"), thresholds=[50, 50])


async def _budget_org(actions: AdminActions, *, period: Period = Period.MONTH) -> tuple[str, str]:
    org = await actions.create_organization(SYSTEM, unique("acme"))
    project = await actions.create_project(SYSTEM, org.id, "main")
    budget = await actions.create_budget(
        SYSTEM,
        org.id,
        project_id=project.id,
        period=period,
        amount=Decimal("10"),
        currency="USD",
        thresholds=[50, 80, 100],
        action=BudgetAction.ALERT_ONLY,
    )
    return project.id, budget.id


async def _fired(store: Store, budget_id: str) -> list[int]:
    events = []
    for delivery in await store.webhooks.list_deliveries(organization_id=None, limit=1000):
        event = await store.webhooks.get_event(delivery.event_id, organization_id=None)
        if event.payload["budget_id"] == budget_id:
            events.append(int(event.payload["threshold_percent"]))
    return sorted(events)


async def test_each_threshold_fires_once_per_period_and_not_again_after_a_restart(
    store: Store,
) -> None:
    actions = AdminActions(store, InProcessBus(), b"p" * 32)
    project_id, budget_id = await _budget_org(actions)
    budget = await store.budgets.get(budget_id, organization_id=None)
    org_id = budget.organization_id
    evaluator = BudgetEvaluator(store, clock=at(NOW))
    await spend(store, org_id, project_id, 4_000_000, NOW)
    first = await evaluator.run_once()
    assert [t for b, t in first.fired if b == budget_id] == []
    await spend(store, org_id, project_id, 4_500_000, NOW)  # 8.5 of 10: 50 and 80 %
    second = await evaluator.run_once()
    assert [t for b, t in second.fired if b == budget_id] == [50, 80]
    assert [t for b, t in (await evaluator.run_once()).fired if b == budget_id] == []
    # Another organisation's and another period's spend do not count.
    await spend(store, org_id, None, 9_000_000, NOW)  # no project: not this project's budget
    await spend(store, org_id, project_id, 9_000_000, datetime(2026, 2, 28, 23, 59, tzinfo=UTC))
    assert [t for b, t in (await evaluator.run_once()).fired if b == budget_id] == []
    # A restarted evaluator (a new instance, a new store connection) fires nothing again.
    restarted = BudgetEvaluator(store, clock=at(NOW))
    assert [t for b, t in (await restarted.run_once()).fired if b == budget_id] == []
    await spend(store, org_id, project_id, 1_500_000, NOW)  # 10.0: 100 %
    assert [t for b, t in (await restarted.run_once()).fired if b == budget_id] == [100]
    stored = await store.budgets.get(budget_id, organization_id=org_id)
    assert stored.spent_micros == 10_000_000
    assert stored.spent_period_start == datetime(2026, 3, 1, tzinfo=UTC)
    crossings = await store.budgets.crossings(
        budget_id, period_start=datetime(2026, 3, 1, tzinfo=UTC)
    )
    assert list(crossings) == [50, 80, 100]
    # The next month starts from zero, and fires again when it gets there.
    april = datetime(2026, 4, 2, tzinfo=UTC)
    await spend(store, org_id, project_id, 5_000_000, april)
    assert [
        t
        for b, t in (await BudgetEvaluator(store, clock=at(april)).run_once()).fired
        if b == budget_id
    ] == [50]


async def test_a_threshold_event_carries_the_figures_as_exact_decimals(
    store: Store, store_url: str
) -> None:
    actions = AdminActions(store, InProcessBus(), b"p" * 32)
    project_id, budget_id = await _budget_org(actions, period=Period.DAY)
    budget = await store.budgets.get(budget_id, organization_id=None)
    await spend(store, budget.organization_id, project_id, 5_000_001, NOW)
    await BudgetEvaluator(store, clock=at(NOW)).run_once()
    key = f"budget:{budget_id}:2026-03-14T00:00:00+00:00:50"
    engine = create_engine(store_url)
    try:
        async with engine.connect() as conn:
            payload = (
                await conn.execute(
                    select(webhook_events.c.payload).where(webhook_events.c.dedupe_key == key)
                )
            ).scalar_one()
    finally:
        await engine.dispose()
    assert payload == {
        "budget_id": budget_id,
        "scope": "project",
        "organization_id": budget.organization_id,
        "project_id": project_id,
        "period": "day",
        "period_start": "2026-03-14T00:00:00Z",
        "period_end": "2026-03-15T00:00:00Z",
        "threshold_percent": 50,
        "currency": "USD",
        "amount": "10.000000",
        "spent": "5.000001",
        "amount_micros": 10_000_000,
        "spent_micros": 5_000_001,
        "action": "alert_only",
        "is_exhausted": False,
    }


async def _racing_evaluations(url: str, rounds: int) -> list[tuple[str, int]]:
    """Two evaluators, each with its own store (connection pool), racing on every pass."""
    first, second = await Store.open(url), await Store.open(url)
    try:
        fired: list[tuple[str, int]] = []
        for _ in range(rounds):
            passes = await asyncio.gather(
                BudgetEvaluator(first, clock=at(NOW)).run_once(),
                BudgetEvaluator(second, clock=at(NOW)).run_once(),
            )
            for report in passes:
                fired.extend(report.fired)
        return fired
    finally:
        await first.close()
        await second.close()


async def test_two_evaluators_racing_fire_each_crossing_exactly_once(
    store: Store, store_url: str
) -> None:
    actions = AdminActions(store, InProcessBus(), b"p" * 32)
    project_id, budget_id = await _budget_org(actions)
    budget = await store.budgets.get(budget_id, organization_id=None)
    org_id = budget.organization_id
    for cost in (3_000_000, 3_000_000, 3_000_000, 3_000_000):  # 30, 60, 90, 120 %
        await spend(store, org_id, project_id, cost, NOW)
        fired = await _racing_evaluations(store_url, rounds=2)
        assert len([f for f in fired if f[0] == budget_id]) == len(
            {f for f in fired if f[0] == budget_id}
        ), fired
    crossings = await store.budgets.crossings(
        budget_id, period_start=datetime(2026, 3, 1, tzinfo=UTC)
    )
    assert list(crossings) == [50, 80, 100]
    for threshold in (50, 80, 100):
        key = f"budget:{budget_id}:2026-03-01T00:00:00+00:00:{threshold}"
        assert await store.webhooks.has_event(key)


async def test_budgets_are_one_per_scope_and_period_and_stay_in_their_tenant(
    store: Store,
) -> None:
    actions = AdminActions(store, InProcessBus(), b"p" * 32)
    project_id, budget_id = await _budget_org(actions)
    budget = await store.budgets.get(budget_id, organization_id=None)
    with pytest.raises(Conflict, match="already has a month budget"):
        await actions.create_budget(
            SYSTEM,
            budget.organization_id,
            project_id=project_id,
            period=Period.MONTH,
            amount=Decimal(1),
            currency="USD",
            thresholds=[100],
            action=BudgetAction.REJECT,
        )
    other = await actions.create_organization(SYSTEM, unique("other"))
    with pytest.raises(NotFound):  # another organisation's project
        await actions.create_budget(
            SYSTEM,
            other.id,
            project_id=project_id,
            period=Period.DAY,
            amount=Decimal(1),
            currency="USD",
            thresholds=[100],
            action=BudgetAction.REJECT,
        )
    with pytest.raises(NotFound):
        await store.budgets.get(budget_id, organization_id=other.id)
    with pytest.raises(NotFound):
        await actions.delete_budget(SYSTEM, other.id, budget_id)
    # Deleting the project deletes its budgets.
    await actions.delete_project(SYSTEM, budget.organization_id, project_id)
    with pytest.raises(NotFound):
        await store.budgets.get(budget_id, organization_id=None)
