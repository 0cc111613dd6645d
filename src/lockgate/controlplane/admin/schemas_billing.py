"""Request and response bodies of the budget and webhook endpoints (unknown fields refused).

Money is exact decimal text in responses (``"100.000000"``) and a decimal
string or number in requests; never a float in between.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, Field

from lockgate.controlplane.admin.schemas import Body
from lockgate.metering.budgets import DEFAULT_THRESHOLDS, BudgetAction, BudgetSpec, Period
from lockgate.webhooks.model import EventType, check_url

Money = Annotated[Decimal, Field(gt=0, max_digits=18, decimal_places=6, allow_inf_nan=False)]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]


def _thresholds(value: list[int]) -> list[int]:
    """The same rule as ``BudgetSpec``'s (percent 1-1000, distinct), sorted."""
    return BudgetSpec(amount=Decimal(1), thresholds=value).thresholds


Thresholds = Annotated[list[int], Field(min_length=1, max_length=10), AfterValidator(_thresholds)]
EventTypes = Annotated[list[EventType], Field(min_length=1, max_length=10)]
Url = Annotated[str, Field(min_length=1, max_length=2048), AfterValidator(check_url)]


class BudgetIn(Body):
    project_id: str | None = None  # None: the organisation's budget (all its projects)
    period: Period
    amount: Money
    currency: Currency = "USD"
    thresholds: Thresholds = Field(default_factory=lambda: list(DEFAULT_THRESHOLDS))
    action: BudgetAction = BudgetAction.ALERT_ONLY


class BudgetPatch(Body):
    amount: Money | None = None
    currency: Currency | None = None
    thresholds: Thresholds | None = None
    action: BudgetAction | None = None


class BudgetStatusOut(BaseModel):
    period_start: datetime
    period_end: datetime
    spent: str  # decimal text, currency units
    spent_micros: int
    percent: float  # of the amount (2 decimals; display only)
    thresholds_crossed: list[int]
    is_exhausted: bool  # spent >= amount now (from the ledger)
    is_enforced: bool  # a reject budget admission refuses on (as of evaluated_at)
    evaluated_at: datetime | None


class BudgetOut(BaseModel):
    id: str
    organization_id: str
    project_id: str | None
    scope: str
    period: Period
    amount: str
    amount_micros: int
    currency: str
    thresholds: list[int]
    action: BudgetAction
    created_at: datetime
    updated_at: datetime
    status: BudgetStatusOut | None = None


class WebhookIn(Body):
    url: Url
    event_types: EventTypes
    description: Annotated[str, Field(max_length=500)] = ""


class WebhookPatch(Body):
    url: Url | None = None
    event_types: EventTypes | None = None
    description: Annotated[str, Field(max_length=500)] | None = None
    is_enabled: bool | None = None


class WebhookRotateIn(Body):
    grace_s: Annotated[float, Field(ge=0, le=30 * 86400)] = 86400.0


class WebhookOut(BaseModel):
    id: str
    organization_id: str
    url: str
    event_types: list[EventType]
    description: str
    is_enabled: bool
    previous_secret_expires_at: datetime | None
    created_at: datetime
    updated_at: datetime


class WebhookCreated(WebhookOut):
    """Returned once, at creation or rotation: ``secret`` is never shown again."""

    secret: str


class AttemptOut(BaseModel):
    attempt: int
    started_at: datetime
    status_code: int | None
    latency_ms: float
    error: str | None


class DeliveryOut(BaseModel):
    id: str
    subscription_id: str
    event_id: str
    event_type: EventType | None = None
    status: str
    attempts: int
    next_attempt_at: datetime | None  # None once delivered or failed
    last_status_code: int | None
    last_error: str | None
    replay_of: str | None
    created_at: datetime
    updated_at: datetime
    attempt_log: list[AttemptOut] | None = None  # on the single-delivery read
    event: dict[str, Any] | None = None  # the body sent (single-delivery read)
