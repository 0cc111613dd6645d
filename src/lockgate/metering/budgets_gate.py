"""Every worker's view of which ``reject`` budgets are spent, handed to its admitter.

The evaluator writes each budget's measured spend on the budget's row; this
gate reads the spent reject budgets of the current periods (one small query)
every ``refresh_interval_s``, and at once when poked through the bus (the
evaluator publishes ``TOPIC_BUDGETS`` when a reject budget becomes spent or
renews; the budget admin actions publish it when a budget changes). It then
gives the admitter the whole set (``LimitAdmitter.set_exhausted_budgets``),
which compiles it into cached policies: the request path itself never reads
the store for budgets.

A store outage keeps the last known set (logged): refusing everyone, or
nobody, because the database blinked would both be worse.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime

from lockgate.admission.admitter import LimitAdmitter
from lockgate.admission.budgets import ExhaustedBudget, ExhaustedBudgets
from lockgate.metering.budgets import TOPIC_BUDGETS, Period, from_micros, period_bounds
from lockgate.store.columns import utc_now
from lockgate.store.errors import StoreError
from lockgate.store.store import Store

log = logging.getLogger("lockgate.budgets")

__all__ = ["TOPIC_BUDGETS", "BudgetGate"]


class BudgetGate:
    def __init__(
        self,
        store: Store,
        admitter: LimitAdmitter,
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._store = store
        self._admitter = admitter
        self._clock = clock
        self._wake = asyncio.Event()
        self._is_failing = False

    def poke(self, _key: str = "") -> None:
        """A bus handler: refresh now (called on the event loop)."""
        self._wake.set()

    async def refresh(self) -> ExhaustedBudgets:
        """Read the spent reject budgets and hand them to the admitter; returns them.

        Raises ``StoreError`` when the store cannot answer (the admitter keeps its set).
        """
        now = self._clock()
        day_start, day_end = period_bounds(Period.DAY, now)
        month_start, month_end = period_bounds(Period.MONTH, now)
        ends = {Period.DAY: day_end, Period.MONTH: month_end}
        spent = await self._store.budgets.exhausted_rejects(
            day_start=day_start, month_start=month_start
        )
        exhausted: ExhaustedBudgets = {}
        for budget in spent:
            found = ExhaustedBudget(
                scope=budget.scope.value,
                scope_id=budget.scope_id,
                period=budget.period.value,
                amount=from_micros(budget.amount_micros),
                currency=budget.currency,
                ends_at=ends[budget.period].timestamp(),
            )
            key = (found.scope, found.scope_id)
            # A day and a month budget both spent: the one that lasts longer decides.
            if key not in exhausted or exhausted[key].ends_at < found.ends_at:
                exhausted[key] = found
        self._admitter.set_exhausted_budgets(exhausted)
        return exhausted

    async def run(self, interval_s: float) -> None:
        """Refresh every ``interval_s`` and whenever poked, until cancelled."""
        while True:
            self._wake.clear()
            try:
                await self.refresh()
            except StoreError as error:
                if not self._is_failing:
                    log.warning("budgets: cannot read spent budgets (%s); keeping the last", error)
                self._is_failing = True
            else:
                if self._is_failing:
                    log.info("budgets: spent budgets readable again")
                self._is_failing = False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval_s):
                    await self._wake.wait()
