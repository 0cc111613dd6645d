"""The limiter contract: what the admission stage asks, and what it is told.

A request is checked against several limits at once (its key's request rate,
its project's tokens per minute, its organisation's monthly spend, …) and is
admitted only if every one of them admits it; when any refuses, none is
charged, so a refused request never eats into the allowance of the others.

Two implementations keep this contract: ``LocalLimiter`` (one process, exact,
no I/O) and ``RedisLimiter`` (shared by every replica, one round trip per
decision, falling back to a ``LocalLimiter`` when Redis cannot answer). The
admission stage, the configuration and the response headers are built on
these types only; they never see GCRA, Lua or Redis.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple, Protocol


class LimitKind(StrEnum):
    """What a limit counts. The three rates share one algorithm (GCRA, see ``gcra.py``);
    ``CONCURRENCY`` is a set of leases, one per request in flight."""

    REQUESTS = "requests"
    TOKENS = "tokens"
    CONCURRENCY = "concurrency"
    SPEND = "spend"

    @property
    def is_rate(self) -> bool:
        return self is not LimitKind.CONCURRENCY

    @property
    def is_settled(self) -> bool:
        """Whether ``settle`` corrects the reservation with the actual usage: tokens and spend
        are estimated before the answer and known after it; a request is a request."""
        return self in (LimitKind.TOKENS, LimitKind.SPEND)


@dataclass(frozen=True, slots=True)
class Limit:
    """One limit to check a request against.

    ``key`` names the counter (``"key:<id>:rpm"``); two ``Limit``s with the same
    key share one counter, so keys must differ between kinds and periods.
    ``limit`` is units per ``period_s`` (requests, tokens, spend in micro-units)
    or, for ``CONCURRENCY``, the most requests in flight (``period_s`` unused).
    ``burst`` is the most units admitted at once; 0 (the default) means the
    whole ``limit``, and is replaced by it, so ``burst`` always reads as the
    effective value. ``fail_open`` says what to do when the shared backend
    cannot answer: judge locally (True) or refuse (False).
    """

    key: str
    kind: LimitKind
    limit: float
    period_s: float = 0.0
    burst: float = 0.0
    fail_open: bool = True
    # GCRA's emission interval, the time one unit takes to refill: read on every
    # decision, so computed once here.
    interval_s: float = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.key:
            raise ValueError("a limit needs a key")
        if not (math.isfinite(self.limit) and self.limit > 0):
            raise ValueError(f"limit {self.key}: limit must be a positive number: {self.limit}")
        if self.kind.is_rate and not (math.isfinite(self.period_s) and self.period_s > 0):
            raise ValueError(f"limit {self.key}: a rate needs period_s > 0: {self.period_s}")
        if not (math.isfinite(self.burst) and self.burst >= 0):
            raise ValueError(f"limit {self.key}: burst must be >= 0: {self.burst}")
        if self.burst == 0:
            object.__setattr__(self, "burst", self.limit)
        interval = self.period_s / self.limit if self.kind.is_rate else 0.0
        object.__setattr__(self, "interval_s", interval)


class LimitState(NamedTuple):
    """One limit after a decision, for the response headers.

    ``remaining`` is how many units could still be admitted now (a float: the
    headers round it down); ``reset_s`` is how long until the limit is fully
    replenished (0 when it already is; always 0 for ``CONCURRENCY``, whose
    slots free when requests end, which no clock predicts). A named tuple: one
    is built per limit per decision, several times cheaper than a frozen dataclass.
    """

    limit: Limit
    remaining: float
    reset_s: float


class Decision(NamedTuple):
    """The answer to one ``acquire``.

    ``states`` follow the order of the limits asked. When refused,
    ``denied_by`` is the first limit that refused and ``retry_after_s`` the
    earliest time the same request could pass every rate limit, if nothing
    else happened meanwhile (0 when only a concurrency limit refused: a slot
    frees whenever a request ends). ``degraded``: the shared backend failed and
    fail-open limits were judged by this process alone. ``unavailable``: the
    backend failed and a fail-closed limit refused — an outage, not a rate
    limit, so it should be reported as such (503, not 429).
    """

    admitted: bool
    states: tuple[LimitState, ...]
    denied_by: Limit | None = None
    retry_after_s: float = 0.0
    degraded: bool = False
    unavailable: bool = False


class Limiter(Protocol):
    """Decides admission against several limits at once; see the module docstring."""

    async def acquire(
        self, limits: Sequence[Limit], costs: Sequence[float], lease_id: str
    ) -> Decision:
        """Admit only if EVERY limit admits its cost; if any refuses, nothing is charged.

        ``costs[i]`` is charged to ``limits[i]``: 1 for a request rate, the
        token estimate, the spend estimate in micro-units. For ``CONCURRENCY``
        the cost is always 1 (the value given is ignored) and ``lease_id`` (the
        request id) holds the slot until ``settle`` or the lease TTL; acquiring
        again with a lease id that already holds a slot does not take another.
        Raises ``ValueError`` only for a malformed call (lengths differ, a
        negative cost); backend failures are reported in the ``Decision``.
        """
        ...

    async def settle(
        self,
        limits: Sequence[Limit],
        reserved: Sequence[float],
        actual: Sequence[float],
        lease_id: str,
    ) -> None:
        """After the response, once per admitted request, with the limits it was admitted on.

        Charges ``actual[i] - reserved[i]`` on TOKENS and SPEND limits (a refund
        when negative, never beyond a full allowance) and releases the
        ``CONCURRENCY`` lease of ``lease_id``. REQUESTS limits are left as they
        are. Never raises for a backend failure: it logs it.
        """
        ...

    async def close(self) -> None:
        """Release connections; the limiter is not used afterwards."""
        ...


def check_call(limits: Sequence[Limit], *columns: Sequence[float]) -> None:
    """The validation every limiter applies to its arguments (one place, one message).

    Keys must be distinct within a call: two limits on one counter would each be
    checked against the counter before either charge, and could overshoot it.
    """
    if len({limit.key for limit in limits}) != len(limits):
        raise ValueError("the limits of one call must have distinct keys")
    for column in columns:
        if len(column) != len(limits):
            raise ValueError(f"{len(limits)} limits but {len(column)} amounts")
        for amount in column:
            if not (math.isfinite(amount) and amount >= 0):
                raise ValueError(f"amounts must be finite and >= 0: {amount}")
