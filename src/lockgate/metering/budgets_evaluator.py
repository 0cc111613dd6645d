"""The budget evaluator: measures every budget's current period from the ledger, off the
hot path, and fires ``budget.threshold_crossed`` once per (budget, period, threshold).

One pass (``run_once``), for each budget:

1. sum the ledger's cost for the scope over the budget's current UTC period
   (``store.budgets.spend``: one indexed range scan);
2. if the spend or the period changed since the last pass, or a threshold is
   newly reached, one transaction records the spend on the budget (what
   admission and the admin API read) and, for each newly reached threshold,
   inserts the crossing row and — only if that insert was new — the webhook
   event and its deliveries (``webhooks.outbox.enqueue``).

Exactly once: the crossing's primary key (budget, period start, threshold)
decides, inside the transaction that also writes the event. Two evaluators
racing (a lease that changed hands while its old holder was paused, or tests
that run two on purpose) each try the insert; the store lets one through and
the other writes nothing. A restarted evaluator finds the rows and fires
nothing again. One deployment normally runs one evaluator at a time (the
lease in ``webhooks/background.py``); correctness does not depend on it.

Spend grows as the ledger's flusher catches up, so a threshold fires on the
first pass after the records that reach it are in the store: seconds after
the requests (flush interval + ``evaluate_interval_s``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from lockgate.metering.budgets import (
    Budget,
    BudgetAction,
    crossed,
    from_micros,
    period_bounds,
)
from lockgate.store.columns import new_id, utc_now
from lockgate.store.store import Store
from lockgate.webhooks.model import EventType
from lockgate.webhooks.outbox import enqueue

log = logging.getLogger("lockgate.budgets")


@dataclass(slots=True)
class Pass:
    """What one evaluation pass did."""

    budgets: int = 0
    fired: list[tuple[str, int]] = field(default_factory=list)  # (budget id, threshold)
    exhaustion_changed: bool = False  # a reject budget became spent, or stopped being


class BudgetEvaluator:
    """``on_exhaustion_change`` is awaited after a pass in which a reject budget became
    spent (or renewed): the caller tells every worker to refresh (a bus message)."""

    def __init__(
        self,
        store: Store,
        *,
        clock: Callable[[], datetime] = utc_now,
        on_exhaustion_change: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._on_exhaustion_change = on_exhaustion_change

    async def run_once(self) -> Pass:
        now = self._clock()
        report = Pass()
        for budget in await self._store.budgets.list_all():
            report.budgets += 1
            await self._evaluate(budget, now, report)
        if report.exhaustion_changed and self._on_exhaustion_change is not None:
            await self._on_exhaustion_change()
        return report

    async def _evaluate(self, budget: Budget, now: datetime, report: Pass) -> None:
        start, end = period_bounds(budget.period, now)
        spent = await self._store.budgets.spend(
            organization_id=budget.organization_id,
            project_id=budget.project_id,
            start=start,
            end=end,
        )
        reached = crossed(budget.thresholds, spent, budget.amount_micros)
        already = set(await self._store.budgets.crossings(budget.id, period_start=start))
        new = [t for t in reached if t not in already]
        is_same = budget.spent_period_start == start and budget.spent_micros == spent
        if is_same and not new:
            return
        was_spent = budget.spent_in(start) >= budget.amount_micros
        is_spent = spent >= budget.amount_micros
        if budget.action is BudgetAction.REJECT and (
            was_spent != is_spent or budget.spent_period_start != start
        ):
            report.exhaustion_changed = True
        async with self._store.transaction() as tx:
            await tx.budgets.record_spend(budget.id, period_start=start, spent_micros=spent, at=now)
            for threshold in new:
                event_id = new_id("evt")
                if not await tx.budgets.add_crossing(
                    budget,
                    period_start=start,
                    threshold=threshold,
                    spent_micros=spent,
                    event_id=event_id,
                    at=now,
                ):
                    continue  # another evaluator recorded it first
                await enqueue(
                    tx,
                    organization_id=budget.organization_id,
                    event_type=EventType.BUDGET_THRESHOLD_CROSSED,
                    dedupe_key=f"budget:{budget.id}:{start.isoformat()}:{threshold}",
                    data=crossing_data(budget, start, end, threshold, spent),
                    event_id=event_id,
                )
                report.fired.append((budget.id, threshold))
        for threshold in new:
            if (budget.id, threshold) in report.fired:
                log.info(
                    "budget %s reached %d%% of its %s amount (%s of %s %s)",
                    budget.id,
                    threshold,
                    budget.period.value,
                    from_micros(spent),
                    from_micros(budget.amount_micros),
                    budget.currency,
                )


def crossing_data(
    budget: Budget, start: datetime, end: datetime, threshold: int, spent_micros: int
) -> dict[str, Any]:
    """The ``data`` of a ``budget.threshold_crossed`` event (amounts as exact decimal text)."""
    return {
        "budget_id": budget.id,
        "scope": budget.scope.value,
        "organization_id": budget.organization_id,
        "project_id": budget.project_id,
        "period": budget.period.value,
        "period_start": _time(start),
        "period_end": _time(end),
        "threshold_percent": threshold,
        "currency": budget.currency,
        "amount": f"{from_micros(budget.amount_micros):f}",
        "spent": f"{from_micros(spent_micros):f}",
        "amount_micros": budget.amount_micros,
        "spent_micros": spent_micros,
        "action": budget.action.value,
        "is_exhausted": spent_micros >= budget.amount_micros,
    }


def _time(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")
