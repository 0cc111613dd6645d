"""What admission tells the caller: rate-limit headers and the refusal errors.

OpenAI-style ``x-ratelimit-*`` headers describe, per dimension (requests,
tokens), the tightest applicable limit: the one with the fewest units left.
The IETF fields (draft-ietf-httpapi-ratelimit-headers) list every rate
limit; they are a draft, so they are opt-in. Refusals name the scope and
dimension that refused, in the caller's own terms, and never another
tenant's figures: a shared model limit is described as the model's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from lockgate.admission.limiter import Decision, LimitKind, LimitState
from lockgate.admission.policy import CompiledPolicy, LimitLabel
from lockgate.errors import ErrorSource, GatewayError


class RateLimited(GatewayError):
    """A limit refused the request; ``Retry-After`` says when the same request would pass."""

    status = 429
    type = "requests"
    code = "rate_limit_exceeded"
    source = ErrorSource.CLIENT


class TokensLimited(RateLimited):
    type = "tokens"


class ConcurrencyLimited(RateLimited):
    code = "concurrency_limit_exceeded"


class BudgetExhausted(RateLimited):
    type = "insufficient_quota"
    code = "budget_exceeded"


class LimiterUnavailable(GatewayError):
    """A fail-closed limit could not be checked (the shared limiter is down)."""

    status = 503
    code = "rate_limiter_unavailable"


class Overloaded(GatewayError):
    """The model is saturated and its queue cannot take (or keep) this request."""

    status = 503
    code = "overloaded"


class OverShare(RateLimited):
    """The tenant already has its share of the saturated model's queue."""

    code = "tenant_queue_share_exceeded"


class Blocked(GatewayError):
    status = 403
    type = "invalid_request_error"
    code = "blocked"
    source = ErrorSource.CLIENT


class OverCap(GatewayError):
    status = 400
    type = "invalid_request_error"
    code = "request_over_cap"
    source = ErrorSource.CLIENT


_ERRORS: dict[LimitKind, type[RateLimited]] = {
    LimitKind.REQUESTS: RateLimited,
    LimitKind.TOKENS: TokensLimited,
    LimitKind.CONCURRENCY: ConcurrencyLimited,
    LimitKind.SPEND: BudgetExhausted,
}


def retry_headers(retry_after_s: float) -> tuple[tuple[bytes, bytes], ...]:
    """``Retry-After`` in whole seconds (rounded up: never invite a retry that fails),
    plus ``retry-after-ms``, which the OpenAI SDKs read first."""
    seconds = max(1, math.ceil(retry_after_s))
    millis = max(1, math.ceil(retry_after_s * 1000))
    return ((b"retry-after", b"%d" % seconds), (b"retry-after-ms", b"%d" % millis))


def refusal(decision: Decision, policy: CompiledPolicy) -> GatewayError:
    """The error for a refused decision (the rate-limit headers go out beside it)."""
    if decision.unavailable:
        return LimiterUnavailable(
            "Rate limits cannot be checked right now and this limit is set to refuse "
            "when that happens; retry shortly.",
            headers=retry_headers(1.0),
        )
    limit = decision.denied_by
    assert limit is not None
    label = policy.label_of(limit)
    retry = decision.retry_after_s
    if math.isinf(retry):
        message = (
            f"This request needs more than the whole {label.describe(limit)}; "
            "send a smaller request (or lower max_tokens)."
        )
        return _ERRORS[limit.kind](message)
    message = f"Rate limit reached: {label.describe(limit)}. Retry after {max(retry, 0.001):.3g} s."
    return _ERRORS[limit.kind](message, headers=retry_headers(retry))


def rate_limit_headers(
    states: Sequence[LimitState], labels: Sequence[LimitLabel], *, ietf: bool
) -> bytes:
    """Header lines (``name: value\r\n``) describing the caller's remaining allowance."""
    requests: LimitState | None = None
    tokens: LimitState | None = None
    for state in states:  # one pass: this runs on every admitted request
        kind = state.limit.kind
        if kind is _REQUESTS:
            if requests is None or state.remaining < requests.remaining:
                requests = state
        elif kind is _TOKENS and (tokens is None or state.remaining < tokens.remaining):
            tokens = state
    lines = b""
    if requests is not None:
        lines = _openai_lines(b"requests", requests)
    if tokens is not None:
        lines += _openai_lines(b"tokens", tokens)
    if ietf:
        lines += _ietf_lines(states, labels)
    return lines


_REQUESTS = LimitKind.REQUESTS
_TOKENS = LimitKind.TOKENS


def _openai_lines(dimension: bytes, state: LimitState) -> bytes:
    return (
        b"x-ratelimit-limit-%s: %d\r\nx-ratelimit-remaining-%s: %d\r\nx-ratelimit-reset-%s: %s\r\n"
    ) % (
        dimension,
        state.limit.limit,
        dimension,
        state.remaining,  # %d truncates: never report a unit that is not whole
        dimension,
        duration(state.reset_s).encode(),
    )


def _ietf_lines(states: Sequence[LimitState], labels: Sequence[LimitLabel]) -> bytes:
    policies = []
    current = []
    for state, label in zip(states, labels, strict=True):
        limit = state.limit
        if limit.kind is LimitKind.CONCURRENCY:
            continue
        name = f"{label.scope}-{label.dimension}"
        unit = {LimitKind.REQUESTS: "requests", LimitKind.TOKENS: "tokens"}.get(limit.kind, "spend")
        policies.append(f'"{name}";q={round(limit.limit)};qu="{unit}";w={round(limit.period_s)}')
        current.append(
            f'"{name}";r={max(0, math.floor(state.remaining))};t={math.ceil(state.reset_s)}'
        )
    if not policies:
        return b""
    return b"ratelimit-policy: %s\r\nratelimit: %s\r\n" % (
        ", ".join(policies).encode(),
        ", ".join(current).encode(),
    )


def duration(seconds: float) -> str:
    """OpenAI's reset format: ``20ms``, ``1.5s``, ``6m0s``, ``1h2m3s``."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    if seconds < 60:
        return f"{math.ceil(seconds * 10) / 10:g}s"
    whole = math.ceil(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes}m{secs}s" if hours else f"{minutes}m{secs}s"
