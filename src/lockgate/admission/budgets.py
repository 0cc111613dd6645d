"""Spend budgets at admission: a scope whose ``reject`` budget is spent is refused, until
its period ends.

How a budget maps onto admission (docs/metering.md, "Budgets"): the limiter's
``spend_per_day``/``spend_per_month`` are GCRA *rates* (refilled continuously,
priced from ``models[].pricing`` estimates, counters that start afresh when a
limit changes and, in process, when it restarts). A budget is an *amount per
calendar period* of what the ledger actually charged. The background
evaluator measures that off the hot path; every worker learns which scopes
are exhausted (``metering/budgets_gate.py``) and hands them to the admitter,
which compiles them into the scope's cached policy. So the request path pays
one attribute test per request, and nothing at all when no budget is spent.
An operator who also wants a hard real-time cap sets the limiter's spend
limits alongside (they are exact across replicas).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from lockgate.admission.feedback import BudgetExhausted, retry_headers

_PERIOD_WORDS = {"day": "daily", "month": "monthly"}


@dataclass(frozen=True, slots=True)
class ExhaustedBudget:
    """A ``reject`` budget whose amount is spent in its current period."""

    scope: str  # "project" or "organization"
    scope_id: str
    period: str  # "day" or "month"
    amount: Decimal
    currency: str
    ends_at: float  # Unix time the period ends (refusals stop then)

    @property
    def dimension(self) -> str:
        """How admission statistics name the refusal, e.g. ``budget_per_month``."""
        return f"budget_per_{self.period}"

    def refusal(self, now: float) -> BudgetExhausted:
        """The 429 for a request of this scope at ``now`` (before ``ends_at``)."""
        ends = datetime.fromtimestamp(self.ends_at, UTC).isoformat().replace("+00:00", "Z")
        word = _PERIOD_WORDS.get(self.period, self.period)
        message = (
            f"Budget exhausted: the {self.scope}'s {word} budget ({self.amount:f} "
            f"{self.currency}) is spent; it renews at {ends}."
        )
        return BudgetExhausted(message, headers=retry_headers(max(1.0, self.ends_at - now)))


ExhaustedBudgets = dict[tuple[str, str], ExhaustedBudget]  # (scope, scope id) -> budget


def budget_for(
    exhausted: ExhaustedBudgets, project_id: str | None, organization_id: str | None
) -> ExhaustedBudget | None:
    """The exhausted budget that refuses this caller, if any (project first, then
    organisation; whichever renews later when both are spent)."""
    if not exhausted:
        return None
    found = [
        budget
        for budget in (
            exhausted.get(("project", project_id)) if project_id else None,
            exhausted.get(("organization", organization_id)) if organization_id else None,
        )
        if budget is not None
    ]
    if not found:
        return None
    return max(found, key=lambda b: b.ends_at if math.isfinite(b.ends_at) else 0.0)
