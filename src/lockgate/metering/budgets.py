"""Spend budgets: an amount per organisation or project per calendar period, with thresholds.

A budget says "this project may spend 100 USD per month; tell me at 50, 80
and 100 %; and at 100 % either refuse its requests (``reject``) or only tell
(``alert_only``)". Periods are calendar periods in UTC: a day starts at
00:00Z, a month on the 1st at 00:00Z, and each starts from zero.

Spend is what the usage ledger charged (``usage_records.cost_micros``, priced
by the metering price catalogue), summed over the period by the background
evaluator (``budgets_evaluator.py``), never on the request path. A budget's
currency should be the catalogue's (costs are summed as they were charged,
without conversion).

This module is the pure part: the records, the input spec, periods and
threshold arithmetic. It imports nothing from the store or the web layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

MICROS_PER_UNIT = Decimal(1_000_000)
DEFAULT_THRESHOLDS = (50, 80, 100)
# Invalidation-bus topic: "re-read which reject budgets are spent" (the key is unused).
TOPIC_BUDGETS = "budgets"


class Period(StrEnum):
    DAY = "day"
    MONTH = "month"


class BudgetAction(StrEnum):
    """What happens at 100 %: refuse the scope's requests until the period ends, or only tell."""

    REJECT = "reject"
    ALERT_ONLY = "alert_only"


class ScopeKind(StrEnum):
    ORGANIZATION = "organization"
    PROJECT = "project"


@dataclass(frozen=True, slots=True)
class Budget:
    """A stored budget, with what the evaluator last measured for it."""

    id: str
    organization_id: str
    project_id: str | None  # None: the organisation's own budget (all its projects)
    period: Period
    amount_micros: int
    currency: str
    thresholds: tuple[int, ...]
    action: BudgetAction
    created_at: datetime
    updated_at: datetime
    spent_micros: int
    spent_period_start: datetime | None
    evaluated_at: datetime | None

    @property
    def scope(self) -> ScopeKind:
        return ScopeKind.ORGANIZATION if self.project_id is None else ScopeKind.PROJECT

    @property
    def scope_id(self) -> str:
        return self.project_id or self.organization_id

    def spent_in(self, period_start: datetime) -> int:
        """What the evaluator measured for the period starting at ``period_start`` (0 if it
        has not measured that period yet: a new period starts from nothing)."""
        return self.spent_micros if self.spent_period_start == period_start else 0


def scope_key(organization_id: str, project_id: str | None) -> str:
    """The stored name of a budget's scope: unique with the period, free of NULLs."""
    if project_id is None:
        return f"organization:{organization_id}"
    return f"project:{project_id}"


class BudgetSpec(BaseModel):
    """A budget as the admin API and the CLI take it (unknown keys refused)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    amount: Annotated[Decimal, Field(gt=0, max_digits=18, decimal_places=6, allow_inf_nan=False)]
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] = "USD"
    thresholds: Annotated[list[int], Field(min_length=1, max_length=10)] = list(DEFAULT_THRESHOLDS)
    action: BudgetAction = BudgetAction.ALERT_ONLY

    @field_validator("thresholds")
    @classmethod
    def _percentages(cls, value: list[int]) -> list[int]:
        if any(not 1 <= t <= 1000 for t in value):
            raise ValueError("thresholds are percentages of the amount, from 1 to 1000")
        if len(set(value)) != len(value):
            raise ValueError("thresholds must be distinct")
        return sorted(value)

    @property
    def amount_micros(self) -> int:
        return to_micros(self.amount)


def to_micros(amount: Decimal) -> int:
    return int((amount * MICROS_PER_UNIT).to_integral_value(ROUND_HALF_EVEN))


_MICRO = Decimal("0.000001")


def from_micros(micros: int) -> Decimal:
    """Exact decimal currency units, always six places (``10000000`` → ``10.000000``)."""
    return (Decimal(micros) / MICROS_PER_UNIT).quantize(_MICRO)


def period_bounds(period: Period, at: datetime) -> tuple[datetime, datetime]:
    """``[start, end)`` of the UTC calendar period holding ``at`` (aware)."""
    utc = at.astimezone(UTC)
    if period is Period.DAY:
        start = utc.replace(hour=0, minute=0, second=0, microsecond=0)
        return start, start + timedelta(days=1)
    start = utc.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if start.month == 12:
        return start, start.replace(year=start.year + 1, month=1)
    return start, start.replace(month=start.month + 1)


def crossed(thresholds: Sequence[int], spent_micros: int, amount_micros: int) -> list[int]:
    """The thresholds (percent) that ``spent`` has reached: ``spent >= amount * t / 100``,
    compared in integers so 80 % of 0.000003 is not a rounding question."""
    return [t for t in thresholds if spent_micros * 100 >= amount_micros * t]


def is_exhausted(budget: Budget, period_start: datetime) -> bool:
    """The budget's amount is spent in the period starting at ``period_start``."""
    return budget.spent_in(period_start) >= budget.amount_micros
