"""The limits an operator can set on a key, project, organisation or model.

One ``LimitSpec`` is stored (as JSON) on each tenancy record and written in the
config file for models and defaults; it is validated here, once, at the edge.
Every field is optional: an unset dimension is unlimited at that scope.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Positive = Annotated[int, Field(gt=0)]
Money = Annotated[Decimal, Field(gt=0, max_digits=18, decimal_places=6)]
FailurePolicy = Literal["open", "closed"]
PriorityName = Literal["interactive", "standard", "batch"]


class LimitSpec(BaseModel):
    """Rates refill continuously (GCRA): ``requests_per_minute: 60`` admits one request
    a second on average, and up to ``burst`` (default: the whole minute's 60) at once."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    requests_per_second: Positive | None = None
    requests_per_minute: Positive | None = None
    requests_per_day: Positive | None = None
    tokens_per_minute: Positive | None = None
    tokens_per_day: Positive | None = None
    concurrent_requests: Positive | None = None
    spend_per_day: Money | None = None  # in the price catalogue's currency
    spend_per_month: Money | None = None
    # Most requests admitted at once by a request-rate limit (default: its full allowance).
    burst: Positive | None = None
    # When the shared limiter (Redis) cannot answer: admit on a local approximation
    # ("open") or refuse ("closed"). None: the gateway's configured default.
    on_backend_failure: FailurePolicy | None = None
    # Pre-admission caps: refuse outright what no limit should have to absorb.
    max_tokens_per_request: Positive | None = None  # cap on the request's max_tokens
    max_request_bytes: Positive | None = None
    # Scheduling when a model is saturated: class first, then share within the class.
    priority: PriorityName | None = None
    weight: Annotated[float, Field(gt=0, le=1000)] | None = None

    @model_validator(mode="after")
    def _burst_needs_a_rate(self) -> LimitSpec:
        rates = (self.requests_per_second, self.requests_per_minute, self.requests_per_day)
        if self.burst is not None and not any(rates):
            raise ValueError(
                "'burst' applies to a request rate: set requests_per_second/minute/day"
            )
        return self

    @property
    def is_empty(self) -> bool:
        """No rate, quota, concurrency or spend limit (caps and scheduling aside)."""
        return not any(value is not None for name, value in self if name in _RATE_FIELDS)

    def to_json(self) -> dict[str, Any]:
        """What the store keeps: only the fields that are set, money as strings."""
        return self.model_dump(mode="json", exclude_none=True)


_RATE_FIELDS = frozenset(
    {
        "requests_per_second",
        "requests_per_minute",
        "requests_per_day",
        "tokens_per_minute",
        "tokens_per_day",
        "concurrent_requests",
        "spend_per_day",
        "spend_per_month",
    }
)
NO_LIMITS = LimitSpec()


def parse_limits(raw: object) -> LimitSpec:
    """A stored JSON object back into a spec (``{}`` or None: no limits)."""
    if not raw:
        return NO_LIMITS
    return LimitSpec.model_validate(raw)
