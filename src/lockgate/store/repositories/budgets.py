"""Spend budgets, their threshold crossings, and the ledger spend they are measured against.

Tenant isolation as everywhere (``tenant_filter``): a budget of another
organisation is not found. The evaluator's reads (``list_all``,
``exhausted_rejects``) are deployment-wide on purpose: it works for everyone.

``add_crossing`` is ``INSERT … ON CONFLICT DO NOTHING`` on the primary key
(budget, period start, threshold) and says whether it inserted: the caller
writes the webhook event in the same transaction only when it did, which is
what makes a crossing fire exactly once across racing evaluators and restarts
(on PostgreSQL the loser of a race waits for the winner's commit, then finds
the row). ``spend`` is this module's own query on the usage ledger: one
indexed range scan (``organization_id, occurred_at``) summing ``cost_micros``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Insert, Table, and_, delete, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Row

from lockgate.metering.budgets import Budget, BudgetAction, Period, scope_key
from lockgate.store.columns import as_utc, new_id, utc_now
from lockgate.store.database import Backend
from lockgate.store.errors import Conflict, ConflictReason, NotFound
from lockgate.store.repositories.base import (
    UNSET,
    Repository,
    Unchanged,
    changed,
    json_value,
    page,
    require,
    tenant_filter,
)
from lockgate.store.schema import usage_records
from lockgate.store.schema_billing import budget_crossings as _crossings
from lockgate.store.schema_billing import budgets as _t


def insert_ignoring_duplicates(backend: Backend, table: Table) -> Insert:
    """``INSERT … ON CONFLICT DO NOTHING`` in the backend's dialect."""
    if backend is Backend.POSTGRESQL:
        return postgresql.insert(table).on_conflict_do_nothing()
    return sqlite.insert(table).on_conflict_do_nothing()


def to_budget(row: Row[Any]) -> Budget:
    return Budget(
        id=row.id,
        organization_id=row.organization_id,
        project_id=row.project_id,
        period=Period(row.period),
        amount_micros=int(row.amount_micros),
        currency=row.currency,
        thresholds=tuple(int(t) for t in row.thresholds),
        action=BudgetAction(row.action),
        created_at=row.created_at,
        updated_at=row.updated_at,
        spent_micros=int(row.spent_micros),
        spent_period_start=row.spent_period_start,
        evaluated_at=row.evaluated_at,
    )


class Budgets(Repository):
    async def create(
        self,
        *,
        organization_id: str,
        project_id: str | None,
        period: Period,
        amount_micros: int,
        currency: str,
        thresholds: Sequence[int],
        action: BudgetAction,
    ) -> Budget:
        """Raises ``Conflict`` when the scope already has a budget for ``period``, and
        ``NotFound`` when the organisation or project does not exist (the caller checks
        that the project belongs to the organisation)."""
        now = utc_now()
        values = {
            "id": new_id("bud"),
            "organization_id": organization_id,
            "project_id": project_id,
            "scope_key": scope_key(organization_id, project_id),
            "period": Period(period).value,
            "amount_micros": amount_micros,
            "currency": currency,
            "thresholds": json_value(list(thresholds)),
            "action": BudgetAction(action).value,
            "created_at": now,
            "updated_at": now,
            "spent_micros": 0,
            "spent_period_start": None,
            "evaluated_at": None,
        }
        try:
            async with self._connector.connect(write=True) as conn:
                row = (await conn.execute(insert(_t).values(values).returning(*_t.c))).one()
        except Conflict as error:
            if error.reason is ConflictReason.DUPLICATE:
                raise Conflict(
                    f"the {'project' if project_id else 'organization'} already has a "
                    f"{Period(period).value} budget: update or delete it",
                    reason=ConflictReason.DUPLICATE,
                ) from error
            raise NotFound("organization or project not found") from error
        return to_budget(row)

    async def get(self, budget_id: str, *, organization_id: str | None) -> Budget:
        statement = select(_t).where(
            _t.c.id == budget_id, tenant_filter(_t.c.organization_id, organization_id)
        )
        async with self._connector.connect(write=False) as conn:
            row = (await conn.execute(statement)).first()
        return to_budget(require(row, "budget", budget_id))

    async def list(
        self,
        *,
        organization_id: str | None,
        project_id: str | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> Sequence[Budget]:
        statement = select(_t).where(tenant_filter(_t.c.organization_id, organization_id))
        if project_id is not None:
            statement = statement.where(_t.c.project_id == project_id)
        statement = page(statement, _t.c.id, limit=limit, after=after)
        async with self._connector.connect(write=False) as conn:
            return [to_budget(row) for row in await conn.execute(statement)]

    async def list_all(self) -> Sequence[Budget]:
        """Every budget of the deployment, for the evaluator (read in pages by id)."""
        found: list[Budget] = []
        after: str | None = None
        while True:
            batch = await self.list(organization_id=None, limit=1000, after=after)
            found.extend(batch)
            if len(batch) < 1000:
                return found
            after = batch[-1].id

    async def update(
        self,
        budget_id: str,
        *,
        organization_id: str,
        amount_micros: int | Unchanged = UNSET,
        currency: str | Unchanged = UNSET,
        thresholds: Sequence[int] | Unchanged = UNSET,
        action: BudgetAction | Unchanged = UNSET,
    ) -> Budget:
        values = changed(amount_micros=amount_micros, currency=currency, action=action)
        if "action" in values:
            values["action"] = BudgetAction(values["action"]).value
        if thresholds is not UNSET:
            values["thresholds"] = json_value(list(thresholds))
        values["updated_at"] = utc_now()
        statement = (
            update(_t)
            .where(_t.c.id == budget_id, _t.c.organization_id == organization_id)
            .values(values)
            .returning(*_t.c)
        )
        async with self._connector.connect(write=True) as conn:
            row = (await conn.execute(statement)).first()
        return to_budget(require(row, "budget", budget_id))

    async def delete(self, budget_id: str, *, organization_id: str) -> None:
        statement = (
            delete(_t)
            .where(_t.c.id == budget_id, _t.c.organization_id == organization_id)
            .returning(_t.c.id)
        )
        async with self._connector.connect(write=True) as conn:
            row = (await conn.execute(statement)).first()
        require(row, "budget", budget_id)

    # -- the evaluator's side ----------------------------------------------------------
    async def spend(
        self, *, organization_id: str, project_id: str | None, start: datetime, end: datetime
    ) -> int:
        """The ledger's cost in ``[start, end)`` for an organisation (or one of its projects),
        in micro-units."""
        r = usage_records
        statement = select(func.coalesce(func.sum(r.c.cost_micros), 0)).where(
            r.c.organization_id == organization_id,
            r.c.occurred_at >= as_utc(start),
            r.c.occurred_at < as_utc(end),
        )
        if project_id is not None:
            statement = statement.where(r.c.project_id == project_id)
        async with self._connector.connect(write=False) as conn:
            return int(await conn.scalar(statement) or 0)

    async def record_spend(
        self, budget_id: str, *, period_start: datetime, spent_micros: int, at: datetime
    ) -> None:
        """What the evaluator measured (a budget deleted meanwhile is simply not updated)."""
        statement = (
            update(_t)
            .where(_t.c.id == budget_id)
            .values(spent_micros=spent_micros, spent_period_start=period_start, evaluated_at=at)
        )
        async with self._connector.connect(write=True) as conn:
            await conn.execute(statement)

    async def add_crossing(
        self,
        budget: Budget,
        *,
        period_start: datetime,
        threshold: int,
        spent_micros: int,
        event_id: str,
        at: datetime,
    ) -> bool:
        """Record that ``budget`` reached ``threshold`` % in the period; False if it was
        recorded before (by this evaluator earlier, or another one)."""
        statement = (
            insert_ignoring_duplicates(self._connector.backend, _crossings)
            .values(
                budget_id=budget.id,
                period_start=as_utc(period_start),
                threshold=threshold,
                spent_micros=spent_micros,
                amount_micros=budget.amount_micros,
                event_id=event_id,
                crossed_at=at,
            )
            .returning(_crossings.c.threshold)
        )
        async with self._connector.connect(write=True) as conn:
            return (await conn.execute(statement)).first() is not None

    async def crossings(self, budget_id: str, *, period_start: datetime) -> Sequence[int]:
        """Thresholds already crossed in the period, ascending."""
        statement = (
            select(_crossings.c.threshold)
            .where(
                _crossings.c.budget_id == budget_id,
                _crossings.c.period_start == as_utc(period_start),
            )
            .order_by(_crossings.c.threshold)
        )
        async with self._connector.connect(write=False) as conn:
            return [int(t) for t in (await conn.execute(statement)).scalars()]

    async def exhausted_rejects(
        self, *, day_start: datetime, month_start: datetime
    ) -> Sequence[Budget]:
        """``reject`` budgets whose measured spend for their current period reached the
        amount: what admission refuses."""
        current = or_(
            and_(_t.c.period == Period.DAY.value, _t.c.spent_period_start == as_utc(day_start)),
            and_(
                _t.c.period == Period.MONTH.value,
                _t.c.spent_period_start == as_utc(month_start),
            ),
        )
        statement = select(_t).where(
            _t.c.action == BudgetAction.REJECT.value,
            _t.c.spent_micros >= _t.c.amount_micros,
            current,
        )
        async with self._connector.connect(write=False) as conn:
            return [to_budget(row) for row in await conn.execute(statement)]
