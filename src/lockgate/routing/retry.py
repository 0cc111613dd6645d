"""Retry decisions: what a failed attempt means, how long to wait, whether we may.

Three rules keep retries from making an outage worse:

* a **budget** per model: retries ≤ ``ratio`` * requests over a sliding window,
  plus a floor of ``min_per_s`` so a quiet model can still retry at all (as
  Finagle and Envoy do). When an upstream fails everything, load grows by at
  most ``ratio``, never by ``max_attempts``*;
* **back-off with jitter** between attempts, so synchronised clients spread out;
* **where** to retry: a timeout or refused connection is retried only on
  *another* deployment (the same silent replica would just time out again); an
  error status may come back to the same deployment, after back-off, when no
  other one can take it.
"""

from __future__ import annotations

import email.utils
import random
import time
from enum import Enum

from lockgate.errors import GatewayError, UpstreamFailure, UpstreamHttpError
from lockgate.routing.member import Outcome
from lockgate.routing.spec import RetryBudgetSpec, RetrySpec

_BUCKETS = 10
CONTEXT_OVERFLOW_CODE = "context_length_exceeded"


class Failure(Enum):
    ELSEWHERE = "elsewhere"  # retry on another deployment only (timeouts, connect, bad creds)
    AGAIN = "again"  # retryable status: another deployment, else the same one after back-off
    CONTEXT_OVERFLOW = "context_overflow"  # never retried; a larger-context fallback may take it
    FINAL = "final"  # the answer, whatever deployment would give it (400s and the like)


def classify(error: GatewayError, spec: RetrySpec) -> Failure:
    """What a failed attempt allows next. Called only for errors raised before any byte
    reached the client (the forward stage), so every retry here is invisible to it."""
    if isinstance(error, UpstreamHttpError):
        if _header(error, b"x-should-retry") == b"false":
            return Failure.FINAL  # the upstream knows better (OpenAI's convention)
        if error.code == "upstream_auth_failed":
            return Failure.ELSEWHERE  # our credentials for that one are wrong
        if error.status in spec.on_status:
            return Failure.AGAIN
        if error.status == 400 and error.code == CONTEXT_OVERFLOW_CODE:
            return Failure.CONTEXT_OVERFLOW
        return Failure.FINAL
    if isinstance(error, UpstreamFailure):
        return Failure.ELSEWHERE  # connect error, timeout before the head, garbled head
    return Failure.FINAL


def health_outcome(error: GatewayError) -> Outcome:
    """How a failed attempt counts for the deployment's health."""
    if isinstance(error, UpstreamHttpError):
        if error.status == 429:
            return Outcome.NEUTRAL  # busy is not broken
        return Outcome.FAILURE if error.status >= 500 else Outcome.SUCCESS
    return Outcome.FAILURE if isinstance(error, UpstreamFailure) else Outcome.NEUTRAL


def retry_after_s(error: GatewayError) -> float | None:
    """The upstream's ``retry-after-ms`` or ``Retry-After`` (seconds or HTTP date), if any."""
    raw = _header(error, b"retry-after-ms")
    if raw is not None:
        try:
            return max(0.0, float(raw) / 1000.0)
        except ValueError:
            pass
    raw = _header(error, b"retry-after")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw.decode("latin-1"))
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _header(error: GatewayError, name: bytes) -> bytes | None:
    for key, value in error.headers:
        if key == name:
            return value
    return None


def throttle_s(throttles: int, spec: RetrySpec) -> float:
    """How long a deployment answering its ``throttles``-th 429 in a row without
    Retry-After is kept out: ``throttle_base_s``, doubling, capped at ``throttle_max_s``."""
    return min(spec.throttle_max_s, spec.throttle_base_s * 2.0 ** min(throttles - 1, 30))


class DeploymentsThrottled(UpstreamFailure):
    """Every deployment the request could go to asked for a back-off (Retry-After) longer
    than the gateway waits itself. Answered without calling any of them, with the
    ``Retry-After`` of the first one due back, so clients wait instead of hammering."""

    status = 503
    code = "upstream_throttled"


def backoff_s(retry: int, spec: RetrySpec) -> float:
    """Wait before retry number ``retry`` (1-based): exponential, capped, "equal jitter"
    (between half and all of it), so it is never zero and never synchronised."""
    ceiling = min(spec.backoff_max_ms, spec.backoff_base_ms * 2.0 ** (retry - 1)) / 1000.0
    return ceiling * (0.5 + 0.5 * random.random())  # noqa: S311 - jitter, not secrecy


class RetryBudget:
    """Sliding-window counts of requests and retries in ``_BUCKETS`` time buckets.

    ``record_request`` runs on every request, so the current bucket lives in plain
    attributes (one comparison and one addition); ``try_spend`` sums the buckets and
    runs only when a retry is wanted.
    """

    __slots__ = (
        "_floor",
        "_per_width",
        "_ratio",
        "_requests",
        "_retries",
        "_stamps",
        "_tick",
        "_tick_requests",
        "_tick_retries",
        "exhausted_total",
        "retries_total",
    )

    def __init__(self, spec: RetryBudgetSpec) -> None:
        self._ratio = spec.ratio
        self._floor = spec.min_per_s * spec.window_s
        self._per_width = _BUCKETS / spec.window_s
        self._stamps = [-1] * _BUCKETS
        self._requests = [0] * _BUCKETS
        self._retries = [0] * _BUCKETS
        self._tick = -1  # the current bucket, counted in the two attributes below
        self._tick_requests = 0
        self._tick_retries = 0
        # Ever, for metrics: retries granted, and retries refused for want of budget.
        self.retries_total = 0
        self.exhausted_total = 0

    def _advance(self, tick: int) -> None:
        """Move to bucket ``tick``: file the current one, start afresh."""
        if self._tick >= 0:
            index = self._tick % _BUCKETS
            self._stamps[index] = self._tick
            self._requests[index] = self._tick_requests
            self._retries[index] = self._tick_retries
        self._tick = tick
        self._tick_requests = 0
        self._tick_retries = 0

    def record_request(self, now: float) -> None:
        tick = int(now * self._per_width)
        if tick != self._tick:
            self._advance(tick)
        self._tick_requests += 1

    def try_spend(self, now: float) -> bool:
        """Take one retry from the budget if there is one left."""
        tick = int(now * self._per_width)
        if tick != self._tick:
            self._advance(tick)
        requests = self._tick_requests
        retries = self._tick_retries
        oldest = tick - _BUCKETS + 1
        for index in range(_BUCKETS):
            # The current bucket's slot holds an older tick, so it is never double counted.
            if oldest <= self._stamps[index] < tick:
                requests += self._requests[index]
                retries += self._retries[index]
        if retries + 1 > self._floor + self._ratio * requests:
            self.exhausted_total += 1
            return False
        self._tick_retries += 1
        self.retries_total += 1
        return True
