"""Configuration of budgets' evaluation and of webhook delivery (``metering.budgets``,
``metering.webhooks`` in the config file); unknown keys are refused."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator


class BudgetsSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Run the evaluator, the summariser and the deliverer in this process (one process of
    # the deployment actually runs them: whoever holds the lease).
    enabled: bool = True
    # How often the evaluator sums each budget's period from the ledger.
    evaluate_interval_s: Annotated[float, Field(gt=0, le=3600)] = 10.0
    # How often every worker re-reads which reject budgets are exhausted (a bus message
    # from the evaluator makes it sooner).
    refresh_interval_s: Annotated[float, Field(gt=0, le=3600)] = 5.0
    # The single-instance lease: renewed every loop, taken over by another process when
    # its holder has not renewed it for this long.
    lease_ttl_s: Annotated[float, Field(gt=0, le=3600)] = 30.0


class WebhooksSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # How often the deliverer looks for due deliveries.
    poll_interval_s: Annotated[float, Field(gt=0, le=60)] = 1.0
    # One attempt, connecting included.
    timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0
    # Attempts before a delivery is marked failed (replayable from the admin API).
    max_attempts: Annotated[int, Field(ge=1, le=100)] = 10
    # Back-off before attempt n+1: min(backoff_max_s, backoff_initial_s * 2^(n-1)), of
    # which a random half is taken off (jitter, so receivers that come back are not
    # stampeded).
    backoff_initial_s: Annotated[float, Field(gt=0)] = 10.0
    backoff_max_s: Annotated[float, Field(gt=0)] = 3600.0
    # Deliveries sent at once.
    concurrency: Annotated[int, Field(ge=1, le=256)] = 8
    # A usage summary for an hour (day) is sent this long after it ends, so the ledger's
    # flush has caught up with the requests of its last seconds.
    summary_delay_s: Annotated[float, Field(ge=0, le=86400)] = 120.0

    @model_validator(mode="after")
    def _backoff_order(self) -> WebhooksSpec:
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("backoff_max_s must be at least backoff_initial_s")
        return self
