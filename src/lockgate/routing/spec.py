"""What an operator may say about routing: strategies, retries, health, fallbacks.

These are the typed config sections (unknown keys rejected, like every other
section); ``lockgate.config.spec`` embeds them. They live here, next to the
code that obeys them, as the admission spec does.

Per-model settings (``models[].routing``) are merged over ``routing.defaults``
field by field, at every level (``merge_routing``), so a model overrides one
knob without restating the rest.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lockgate.routing.lifecycle_spec import RegistrationSpec

StrategyName = Literal[
    "least_outstanding", "weighted_random", "power_of_two", "latency", "cache_affinity"
]
AffinitySource = Literal["header", "user", "prefix"]
_HEADER = r"^[a-z0-9-]{1,64}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AffinitySpec(_Strict):
    """Where the cache-affinity key comes from, first source present wins.

    ``header`` (a session id the client sends) and ``user`` (the OpenAI body field)
    keep one conversation on one replica; ``prefix`` (the first ``prefix_bytes`` of
    the prompt) sends requests that share a system prompt to the replica that has
    it cached. ``load_factor`` is the ε of consistent hashing with bounded load:
    no replica takes more than (1 + ε) * the average outstanding requests.
    """

    # Tuples, not lists, here and below: the resolved model (which holds these) stays hashable.
    sources: Annotated[tuple[AffinitySource, ...], Field(min_length=1)] = (
        "header",
        "user",
        "prefix",
    )
    header: Annotated[str, Field(pattern=_HEADER)] = "x-session-id"
    prefix_bytes: Annotated[int, Field(ge=16, le=65536)] = 512
    load_factor: Annotated[float, Field(gt=0, le=10)] = 0.25

    @field_validator("header", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


class RetrySpec(_Strict):
    """Attempts per request on one model (the first included) and their pacing."""

    max_attempts: Annotated[int, Field(ge=1, le=10)] = 3
    backoff_base_ms: Annotated[float, Field(ge=0, le=60_000)] = 25.0
    backoff_max_ms: Annotated[float, Field(ge=0, le=60_000)] = 1000.0
    # Upstream statuses worth another attempt. 400-class answers other than 429
    # would be the same anywhere, so they are refused here.
    on_status: tuple[Annotated[int, Field(ge=100, le=599)], ...] = (429, 500, 502, 503, 504)
    # Longest upstream Retry-After the gateway waits out itself when no other
    # deployment can take the retry; longer ones go back to the client.
    max_retry_after_s: Annotated[float, Field(ge=0, le=60)] = 1.0
    # A 429/503 *without* Retry-After keeps its deployment out this long, doubling
    # while it keeps answering so (capped at throttle_max_s), so it is not hammered.
    throttle_base_s: Annotated[float, Field(gt=0, le=600)] = 0.5
    throttle_max_s: Annotated[float, Field(gt=0, le=3600)] = 30.0

    @field_validator("on_status")
    @classmethod
    def _retryable(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        wrong = [s for s in value if s != 429 and s < 500]
        if wrong:
            raise ValueError(f"only 429 and 5xx may be retried, not {wrong}")
        return value


class OutlierSpec(_Strict):
    """Passive outlier detection: consecutive failures eject a deployment for a while.

    Each ejection lasts twice the previous one (``base_ejection_s``, doubling, at most
    ``max_ejection_s``); a deployment back from ejection is re-ejected by its first
    failure until it succeeds once.
    """

    enabled: bool = True
    consecutive_failures: Annotated[int, Field(ge=1, le=1000)] = 5
    base_ejection_s: Annotated[float, Field(gt=0, le=3600)] = 5.0
    max_ejection_s: Annotated[float, Field(gt=0, le=86400)] = 300.0


class BreakerSpec(_Strict):
    """Circuit breaker on the failure rate of a deployment's last ``window`` calls."""

    enabled: bool = True
    window: Annotated[int, Field(ge=1, le=10_000)] = 20
    min_calls: Annotated[int, Field(ge=1, le=10_000)] = 10
    failure_ratio: Annotated[float, Field(gt=0, le=1)] = 0.5
    open_s: Annotated[float, Field(gt=0, le=3600)] = 10.0

    @model_validator(mode="after")
    def _min_within_window(self) -> BreakerSpec:
        if self.min_calls > self.window:
            raise ValueError("'min_calls' cannot exceed 'window'")
        return self


class HealthCheckSpec(_Strict):
    """Active checks: GET ``path`` on each deployment's origin every ``interval_s``."""

    path: Annotated[str, Field(pattern=r"^/[A-Za-z0-9._~/-]*$")] = "/health"
    interval_s: Annotated[float, Field(gt=0, le=3600)] = 5.0
    timeout_s: Annotated[float, Field(gt=0, le=600)] = 2.0
    unhealthy_threshold: Annotated[int, Field(ge=1, le=100)] = 2
    healthy_threshold: Annotated[int, Field(ge=1, le=100)] = 1


class HedgeSpec(_Strict):
    """Hedged non-streamed requests: a second attempt on another deployment when the first
    has not answered after ``after_ms`` or the model's ``after_percentile`` latency.

    With both, the fixed delay applies until ``min_samples`` latencies are known. The
    first answer wins; the others are cancelled. Hedges spend the retry budget.
    """

    after_ms: Annotated[float, Field(gt=0, le=600_000)] | None = None
    after_percentile: Annotated[float, Field(gt=0, lt=100)] | None = None
    max_extra: Annotated[int, Field(ge=1, le=3)] = 1
    min_samples: Annotated[int, Field(ge=1, le=10_000)] = 20

    @model_validator(mode="after")
    def _has_delay(self) -> HedgeSpec:
        if self.after_ms is None and self.after_percentile is None:
            raise ValueError("give 'after_ms', 'after_percentile' or both")
        return self


class StreamSpec(_Strict):
    """What happens when an upstream stream goes wrong after bytes reached the client.

    ``on_malformed_event``: ``error`` ends the stream with an in-band error event,
    ``skip`` drops the bad event and carries on. ``failover``: continue a broken
    stream on a deployment with ``supports_continuation`` (at most ``max_failovers``
    times), else end it with the in-band error.
    """

    on_malformed_event: Literal["error", "skip"] = "error"
    failover: bool = True
    max_failovers: Annotated[int, Field(ge=0, le=5)] = 1


class EngineMetricsSpec(_Strict):
    """Scrape each deployment's Prometheus ``path`` (vLLM/SGLang names) every ``interval_s``
    and add running/waiting requests and KV-cache use to its load score. Readings older
    than ``stale_after_s`` are ignored (a dead scrape must not freeze a replica's score)."""

    path: Annotated[str, Field(pattern=r"^/[A-Za-z0-9._~/-]*$")] = "/metrics"
    interval_s: Annotated[float, Field(gt=0, le=3600)] = 1.0
    timeout_s: Annotated[float, Field(gt=0, le=600)] = 1.0
    stale_after_s: Annotated[float, Field(gt=0, le=3600)] = 5.0


class ModelRoutingSpec(_Strict):
    strategy: StrategyName = "least_outstanding"
    affinity: AffinitySpec = AffinitySpec()
    retries: RetrySpec = RetrySpec()
    outlier: OutlierSpec = OutlierSpec()
    breaker: BreakerSpec = BreakerSpec()
    health_check: HealthCheckSpec | None = None
    hedge: HedgeSpec | None = None
    streams: StreamSpec = StreamSpec()
    engine_metrics: EngineMetricsSpec | None = None


class RetryBudgetSpec(_Strict):
    """Retries ≤ ``min_per_s`` * ``window_s`` + ``ratio`` * requests in the last ``window_s``.

    Counted per model (the one the client asked for), so one model's outage cannot
    spend another's budget, and retries cannot multiply an outage's load.
    """

    ratio: Annotated[float, Field(ge=0, le=10)] = 0.2
    min_per_s: Annotated[float, Field(ge=0, le=10_000)] = 3.0
    window_s: Annotated[float, Field(gt=0, le=3600)] = 10.0


class IdempotencySpec(_Strict):
    """``Idempotency-Key`` on non-streamed /v1 requests (the IETF draft): per tenant, a
    retry with the same key and body replays the stored answer for ``ttl_s``; the same
    key with another body is a 422; a duplicate of a request still running waits for it
    up to ``wait_s`` (then 409). A claim whose request never ends (a crashed worker)
    lapses after ``in_flight_ttl_s``. Answers above ``max_response_bytes`` are not kept;
    the in-process store (embedded mode) holds at most ``max_entries`` keys."""

    enabled: bool = True
    ttl_s: Annotated[float, Field(gt=0, le=7 * 86400)] = 86400.0
    wait_s: Annotated[float, Field(gt=0, le=600)] = 30.0
    in_flight_ttl_s: Annotated[float, Field(gt=0, le=86400)] = 900.0
    max_response_bytes: Annotated[int, Field(ge=1024, le=64 * 1024 * 1024)] = 1024 * 1024
    max_entries: Annotated[int, Field(ge=1, le=10_000_000)] = 100_000


class RoutingSpec(_Strict):
    retry_budget: RetryBudgetSpec = RetryBudgetSpec()
    idempotency: IdempotencySpec = IdempotencySpec()
    defaults: ModelRoutingSpec = ModelRoutingSpec()
    # Engines registering their own deployments, with heartbeats (docs/routing.md).
    registration: RegistrationSpec = RegistrationSpec()


class FallbackSpec(_Strict):
    """Another model to try; written as a name or as ``{model, on_failure, on_context_overflow}``.

    ``on_failure``: when the model has no healthy deployment or every attempt failed
    with a retryable error. ``on_context_overflow``: when an upstream said the prompt
    does not fit (400 ``context_length_exceeded``) — only to models marked so, since a
    larger context window is the point of that hop.
    """

    model: str
    on_failure: bool = True
    on_context_overflow: bool = False

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        return {"model": value} if isinstance(value, str) else value


def merge_routing(base: ModelRoutingSpec, override: ModelRoutingSpec | None) -> ModelRoutingSpec:
    """``override`` over ``base``: only the fields the operator wrote, at every depth."""
    if override is None:
        return base
    merged = _merge(base, override)
    assert isinstance(merged, ModelRoutingSpec)
    return merged


def _merge(base: BaseModel, override: BaseModel) -> BaseModel:
    updates: dict[str, Any] = {}
    for name in override.model_fields_set:
        new = getattr(override, name)
        old = getattr(base, name)
        if isinstance(new, BaseModel) and isinstance(old, type(new)):
            new = _merge(old, new)
        updates[name] = new
    return base.model_copy(update=updates)
