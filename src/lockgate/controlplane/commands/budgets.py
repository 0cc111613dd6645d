"""``lockgate budgets set|list|delete``: spend budgets from the host, as the admin API sets them.

``set`` creates the scope's budget for the period, or changes the one it has
(options left out stay as they are). ``list`` shows each budget with its
spend so far in the current period, read from the ledger.
"""

from __future__ import annotations

import argparse
from decimal import Decimal, InvalidOperation
from typing import Any

from lockgate.controlplane.actions.budgets import budget_status, budget_summary
from lockgate.controlplane.commands.errors import UsageError
from lockgate.controlplane.commands.inputs import every, resolve_organization, resolve_project
from lockgate.controlplane.commands.output import Column
from lockgate.controlplane.commands.session import Session
from lockgate.metering.budgets import Budget, BudgetAction, BudgetSpec, Period, from_micros
from lockgate.store.repositories.base import MAX_PAGE_SIZE

COLUMNS = (
    Column("ID", "id"),
    Column("SCOPE", "scope_id"),
    Column("PERIOD", "period"),
    Column("AMOUNT", "amount"),
    Column("SPENT", "spent"),
    Column("%", "percent"),
    Column("ACTION", "action"),
    Column("THRESHOLDS", "thresholds"),
    Column("CROSSED", "thresholds_crossed"),
)


def _amount(text: str | None) -> Decimal | None:
    if text is None:
        return None
    try:
        return Decimal(text)
    except InvalidOperation:
        raise UsageError(f"--amount {text!r} is not a number") from None


async def _record(session: Session, budget: Budget) -> dict[str, Any]:
    status = await budget_status(session.store, budget)
    return {
        **budget_summary(budget),
        "scope_id": budget.scope_id,
        "spent": f"{from_micros(status.spent_micros):f}",
        "percent": status.percent_of(budget.amount_micros),
        "thresholds_crossed": list(status.thresholds_crossed),
        "is_exhausted": status.is_exhausted,
    }


async def set_budget(session: Session, args: argparse.Namespace) -> int:
    store = session.store
    org = await resolve_organization(store, args.org)
    project_id = None
    if args.project:
        project_id = (await resolve_project(store, org.id, args.project)).id
    period = Period(args.period)
    amount = _amount(args.amount)
    existing = [
        b
        for b in await store.budgets.list(organization_id=org.id, project_id=project_id, limit=100)
        if b.project_id == project_id and b.period is period
    ]
    action = BudgetAction(args.action) if args.action else None
    if existing:
        budget = await session.actions.update_budget(
            session.actor,
            org.id,
            existing[0].id,
            amount=amount,
            currency=args.currency,
            thresholds=_spec(amount or Decimal(1), args).thresholds if args.threshold else None,
            action=action,
        )
    else:
        if amount is None:
            raise UsageError("--amount is required for a new budget")
        spec = _spec(amount, args)
        budget = await session.actions.create_budget(
            session.actor,
            org.id,
            project_id=project_id,
            period=period,
            amount=spec.amount,
            currency=spec.currency,
            thresholds=spec.thresholds,
            action=spec.action,
        )
    session.out.record(await _record(session, budget), COLUMNS)
    return 0


def _spec(amount: Decimal, args: argparse.Namespace) -> BudgetSpec:
    values: dict[str, Any] = {"amount": amount}
    if args.currency:
        values["currency"] = args.currency
    if args.threshold:
        values["thresholds"] = args.threshold
    if args.action:
        values["action"] = args.action
    try:
        return BudgetSpec.model_validate(values)
    except ValueError as error:
        raise UsageError(str(error).splitlines()[-1].strip()) from None


async def list_budgets(session: Session, args: argparse.Namespace) -> int:
    store = session.store
    org = await resolve_organization(store, args.org)
    project_id = None
    if args.project:
        project_id = (await resolve_project(store, org.id, args.project)).id
    budgets = await every(
        lambda after: store.budgets.list(
            organization_id=org.id, project_id=project_id, limit=MAX_PAGE_SIZE, after=after
        )
    )
    session.out.records([await _record(session, b) for b in budgets], COLUMNS)
    return 0


async def delete_budget(session: Session, args: argparse.Namespace) -> int:
    org = await resolve_organization(session.store, args.org)
    budget = await session.actions.delete_budget(session.actor, org.id, args.budget_id)
    session.out.record(budget_summary(budget), COLUMNS[:4])
    return 0
