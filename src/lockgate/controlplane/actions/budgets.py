"""Spend budgets: create, update, delete (each audited), and where a budget stands now.

After every change the bus carries ``TOPIC_BUDGETS``, so every worker re-reads
which reject budgets are spent: raising the amount of a spent budget, or
deleting it, lets its scope's requests through again within a second.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from lockgate.controlplane.actions.base import ActionsBase, Actor, audit, changes
from lockgate.metering.budgets import (
    TOPIC_BUDGETS,
    Budget,
    BudgetAction,
    Period,
    from_micros,
    period_bounds,
    to_micros,
)
from lockgate.store.columns import utc_now
from lockgate.store.repositories.base import UNSET
from lockgate.store.store import Store


def budget_summary(budget: Budget) -> dict[str, Any]:
    """What the audit log and the admin API show of a budget's settings."""
    return {
        "id": budget.id,
        "organization_id": budget.organization_id,
        "project_id": budget.project_id,
        "scope": budget.scope.value,
        "period": budget.period.value,
        "amount": f"{from_micros(budget.amount_micros):f}",
        "currency": budget.currency,
        "thresholds": list(budget.thresholds),
        "action": budget.action.value,
        "created_at": budget.created_at.isoformat(),
    }


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """A budget's current period: spend read from the ledger now, against the amount."""

    period_start: datetime
    period_end: datetime
    spent_micros: int
    thresholds_crossed: tuple[int, ...]  # recorded crossings (each fired one event)
    is_exhausted: bool  # spent >= amount now
    is_enforced: bool  # a reject budget admission is refusing on (as last evaluated)
    evaluated_at: datetime | None

    def percent_of(self, amount_micros: int) -> float:
        return round(self.spent_micros * 100 / amount_micros, 2)


async def budget_status(store: Store, budget: Budget, now: datetime | None = None) -> BudgetStatus:
    """Spend so far in ``budget``'s current period (one indexed sum over the ledger)."""
    at = now or utc_now()
    start, end = period_bounds(budget.period, at)
    spent = await store.budgets.spend(
        organization_id=budget.organization_id,
        project_id=budget.project_id,
        start=start,
        end=end,
    )
    recorded = await store.budgets.crossings(budget.id, period_start=start)
    return BudgetStatus(
        period_start=start,
        period_end=end,
        spent_micros=spent,
        thresholds_crossed=tuple(recorded),
        is_exhausted=spent >= budget.amount_micros,
        is_enforced=budget.action is BudgetAction.REJECT
        and budget.spent_in(start) >= budget.amount_micros,
        evaluated_at=budget.evaluated_at,
    )


class BudgetActions(ActionsBase):
    async def create_budget(
        self,
        actor: Actor,
        organization_id: str,
        *,
        project_id: str | None,
        period: Period,
        amount: Decimal,
        currency: str,
        thresholds: Sequence[int],
        action: BudgetAction,
    ) -> Budget:
        """One budget per (scope, period): a second is a ``Conflict``. A project of another
        organisation is ``NotFound``."""
        async with self._store.transaction() as tx:
            await tx.organizations.get(organization_id)
            if project_id is not None:
                await tx.projects.get(project_id, organization_id=organization_id)
            budget = await tx.budgets.create(
                organization_id=organization_id,
                project_id=project_id,
                period=period,
                amount_micros=to_micros(amount),
                currency=currency,
                thresholds=thresholds,
                action=action,
            )
            await audit(
                tx,
                actor,
                "budget.create",
                "budget",
                budget.id,
                organization_id,
                after=budget_summary(budget),
            )
        await self._bus.publish(TOPIC_BUDGETS, budget.id)
        return budget

    async def update_budget(
        self,
        actor: Actor,
        organization_id: str,
        budget_id: str,
        *,
        amount: Decimal | None = None,
        currency: str | None = None,
        thresholds: Sequence[int] | None = None,
        action: BudgetAction | None = None,
    ) -> Budget:
        """Arguments left None stay as they are. Thresholds already crossed this period
        do not fire again; newly reached ones fire on the evaluator's next pass."""
        async with self._store.transaction() as tx:
            before = await tx.budgets.get(budget_id, organization_id=organization_id)
            after = await tx.budgets.update(
                budget_id,
                organization_id=organization_id,
                amount_micros=UNSET if amount is None else to_micros(amount),
                currency=UNSET if currency is None else currency,
                thresholds=UNSET if thresholds is None else tuple(thresholds),
                action=UNSET if action is None else action,
            )
            old, new = changes(budget_summary(before), budget_summary(after))
            await audit(
                tx,
                actor,
                "budget.update",
                "budget",
                budget_id,
                organization_id,
                before=old,
                after=new,
            )
        await self._bus.publish(TOPIC_BUDGETS, budget_id)
        return after

    async def delete_budget(self, actor: Actor, organization_id: str, budget_id: str) -> Budget:
        async with self._store.transaction() as tx:
            budget = await tx.budgets.get(budget_id, organization_id=organization_id)
            await tx.budgets.delete(budget_id, organization_id=organization_id)
            await audit(
                tx,
                actor,
                "budget.delete",
                "budget",
                budget_id,
                organization_id,
                before=budget_summary(budget),
            )
        await self._bus.publish(TOPIC_BUDGETS, budget_id)
        return budget
