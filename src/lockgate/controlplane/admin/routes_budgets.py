"""Spend budgets of an organisation and its projects: set, read (with spend so far), delete.

Reading needs ``usage.read`` (for a project's budget, on that project);
creating, changing and deleting need ``budget.manage`` (organisation admins).
Another organisation's budgets are 404, like everything of another tenant.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from lockgate.controlplane.actions.budgets import budget_status
from lockgate.controlplane.admin.deps import Caller, Services
from lockgate.controlplane.admin.schemas import Page
from lockgate.controlplane.admin.schemas_billing import (
    BudgetIn,
    BudgetOut,
    BudgetPatch,
    BudgetStatusOut,
)
from lockgate.metering.budgets import Budget, from_micros
from lockgate.store.store import Store
from lockgate.tenancy.rbac import Permission

router = APIRouter(prefix="/admin/v1/organizations/{org_id}/budgets")
PageSize = Annotated[int, Query(ge=1, le=500)]


async def _out(budget: Budget, store: Store | None = None) -> BudgetOut:
    status = None
    if store is not None:
        found = await budget_status(store, budget)
        status = BudgetStatusOut(
            period_start=found.period_start,
            period_end=found.period_end,
            spent=f"{from_micros(found.spent_micros):f}",
            spent_micros=found.spent_micros,
            percent=found.percent_of(budget.amount_micros),
            thresholds_crossed=list(found.thresholds_crossed),
            is_exhausted=found.is_exhausted,
            is_enforced=found.is_enforced,
            evaluated_at=found.evaluated_at,
        )
    return BudgetOut(
        id=budget.id,
        organization_id=budget.organization_id,
        project_id=budget.project_id,
        scope=budget.scope.value,
        period=budget.period,
        amount=f"{from_micros(budget.amount_micros):f}",
        amount_micros=budget.amount_micros,
        currency=budget.currency,
        thresholds=list(budget.thresholds),
        action=budget.action,
        created_at=budget.created_at,
        updated_at=budget.updated_at,
        status=status,
    )


@router.post("", status_code=201)
async def create_budget(org_id: str, body: BudgetIn, caller: Caller, svc: Services) -> BudgetOut:
    """One budget per scope and period (409 for a second: update that one instead)."""
    caller.require(Permission.BUDGET_MANAGE, org_id, body.project_id)
    budget = await svc.actions.create_budget(
        caller.actor,
        org_id,
        project_id=body.project_id,
        period=body.period,
        amount=body.amount,
        currency=body.currency,
        thresholds=body.thresholds,
        action=body.action,
    )
    return await _out(budget, svc.store)


@router.get("")
async def list_budgets(
    org_id: str,
    caller: Caller,
    svc: Services,
    project_id: str | None = None,
    limit: PageSize = 100,
    after: str | None = None,
) -> Page[BudgetOut]:
    """With each budget's spend so far in its current period. Without ``project_id``
    (every budget of the organisation) the caller needs ``usage.read`` org-wide."""
    caller.require(Permission.USAGE_READ, org_id, project_id)
    budgets = await svc.store.budgets.list(
        organization_id=org_id, project_id=project_id, limit=limit + 1, after=after
    )
    data = [await _out(b, svc.store) for b in budgets[:limit]]
    return Page(data=data, has_more=len(budgets) > limit, last_id=data[-1].id if data else None)


@router.get("/{budget_id}")
async def get_budget(org_id: str, budget_id: str, caller: Caller, svc: Services) -> BudgetOut:
    caller.require_any_in(org_id)
    budget = await svc.store.budgets.get(budget_id, organization_id=org_id)
    caller.require(Permission.USAGE_READ, org_id, budget.project_id)
    return await _out(budget, svc.store)


@router.patch("/{budget_id}")
async def update_budget(
    org_id: str, budget_id: str, body: BudgetPatch, caller: Caller, svc: Services
) -> BudgetOut:
    caller.require(Permission.BUDGET_MANAGE, org_id)
    budget = await svc.actions.update_budget(
        caller.actor,
        org_id,
        budget_id,
        amount=body.amount,
        currency=body.currency,
        thresholds=body.thresholds,
        action=body.action,
    )
    return await _out(budget, svc.store)


@router.delete("/{budget_id}")
async def delete_budget(org_id: str, budget_id: str, caller: Caller, svc: Services) -> BudgetOut:
    caller.require(Permission.BUDGET_MANAGE, org_id)
    return await _out(await svc.actions.delete_budget(caller.actor, org_id, budget_id))
