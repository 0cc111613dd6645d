"""``LocalLimiter``: every limit kept in this process's memory, exact, no I/O.

It serves two purposes: the limiter of a single-process (embedded) gateway,
and the fallback that ``RedisLimiter`` judges fail-open limits with while Redis
cannot answer (then it is approximate across replicas: each replica grants the
whole allowance on its own).

Cost per decision is O(number of limits): one dict lookup per rate counter,
and for a concurrency limit, expired leases are dropped from the front of an
insertion-ordered map (every lease has the same TTL on a monotonic clock, so
the oldest expires first). Memory is bounded by the counters in use: a rate
counter whose TAT has passed is full, which is the same as absent, and a
lease set whose leases have all expired is empty; both are swept once the
number of counters doubles since the last sweep (amortised O(1) per decision),
so idle tenants cost nothing.

Not thread-safe: one instance per event loop, like the rest of the data plane.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from lockgate.admission import gcra
from lockgate.admission.limiter import Decision, Limit, LimitKind, LimitState, check_call

_MIN_SWEEP_SIZE = 1024
# Module constants: attribute access on an enum class costs ~0.2 µs on Python 3.11.
_CONCURRENCY = LimitKind.CONCURRENCY
_SETTLED = frozenset(kind for kind in LimitKind if kind.is_settled)


class LocalLimiter:
    """The ``Limiter`` protocol in one process; see the module docstring.

    ``clock`` returns seconds (monotonic; injectable for tests); leases not
    released within ``lease_ttl_s`` expire (a request that never settles, e.g.
    after a bug, cannot hold a slot forever). ``sweep_min_size`` is the number of
    counters below which no sweep runs.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        lease_ttl_s: float = 900.0,
        sweep_min_size: int = _MIN_SWEEP_SIZE,
    ) -> None:
        if lease_ttl_s <= 0:
            raise ValueError(f"lease_ttl_s must be > 0: {lease_ttl_s}")
        self._clock = clock
        self._lease_ttl_s = lease_ttl_s
        self._min_sweep_size = sweep_min_size
        self._sweep_size = sweep_min_size
        self._tats: dict[str, float] = {}
        # key -> lease id -> expiry; oldest first (see the module docstring).
        self._leases: dict[str, OrderedDict[str, float]] = {}

    @property
    def counter_count(self) -> int:
        """Counters held in memory (rate counters plus lease sets): what the sweep bounds."""
        return len(self._tats) + len(self._leases)

    # -- the Limiter protocol ----------------------------------------------------------
    async def acquire(
        self, limits: Sequence[Limit], costs: Sequence[float], lease_id: str
    ) -> Decision:
        return self.decide(limits, costs, lease_id)

    async def settle(
        self,
        limits: Sequence[Limit],
        reserved: Sequence[float],
        actual: Sequence[float],
        lease_id: str,
    ) -> None:
        self.settle_now(limits, reserved, actual, lease_id)

    async def close(self) -> None:
        self._tats.clear()
        self._leases.clear()

    # -- synchronous core (RedisLimiter's fallback calls these directly) ---------------
    def decide(
        self,
        limits: Sequence[Limit],
        costs: Sequence[float],
        lease_id: str,
        *,
        trusted: bool = False,
    ) -> Decision:
        """``acquire`` without the coroutine: check every limit, then charge all or none.

        ``trusted``: the caller built ``limits`` and ``costs`` so that ``check_call``
        holds (the admission policy does, once, when it compiles them), so skip it.
        """
        if not trusted:
            check_call(limits, costs)
        now = self._clock()
        # Per limit: its GCRA verdict, or for a concurrency limit its live leases.
        checks: list[gcra.Verdict | OrderedDict[str, float]] = []
        denied_by: Limit | None = None
        retry_after_s = 0.0
        for limit, cost in zip(limits, costs, strict=True):
            if limit.kind is _CONCURRENCY:
                leases = self._live_leases(limit.key, now)
                checks.append(leases)
                is_admitted = lease_id in leases or len(leases) < limit.limit
            else:
                tat = self._tats.get(limit.key)
                verdict = gcra.check(tat, now, cost, limit.interval_s, limit.burst)
                checks.append(verdict)
                is_admitted = verdict.is_admitted
                retry_after_s = max(retry_after_s, verdict.wait_s)
            if not is_admitted and denied_by is None:
                denied_by = limit
        is_admitted = denied_by is None
        states = []
        for limit, check in zip(limits, checks, strict=True):
            if isinstance(check, gcra.Verdict):
                if is_admitted and check.tat > now:
                    self._tats[limit.key] = check.tat
                tat = self._tats.get(limit.key)
                remaining, reset_s = gcra.state(tat, now, limit.interval_s, limit.burst)
                states.append(LimitState(limit, remaining, reset_s))
            else:
                if is_admitted:
                    check = self._lease(limit.key, lease_id, now)
                states.append(LimitState(limit, max(0.0, limit.limit - len(check)), 0.0))
        if is_admitted:
            self._maybe_sweep(now)
        return Decision(
            admitted=is_admitted,
            states=tuple(states),
            denied_by=denied_by,
            retry_after_s=0.0 if is_admitted else retry_after_s,
        )

    def settle_now(
        self,
        limits: Sequence[Limit],
        reserved: Sequence[float],
        actual: Sequence[float],
        lease_id: str,
        *,
        trusted: bool = False,
    ) -> None:
        """``settle`` without the coroutine (``trusted``: as for ``decide``)."""
        if not trusted:
            check_call(limits, reserved, actual)
        now = self._clock()
        for limit, reserved_units, actual_units in zip(limits, reserved, actual, strict=True):
            if limit.kind is _CONCURRENCY:
                leases = self._leases.get(limit.key)
                if leases is not None:
                    leases.pop(lease_id, None)
                    if not leases:
                        del self._leases[limit.key]
            elif limit.kind in _SETTLED and actual_units != reserved_units:
                delta = actual_units - reserved_units
                tat = gcra.settle(self._tats.get(limit.key), now, delta, limit.interval_s)
                if tat > now:
                    self._tats[limit.key] = tat
                else:
                    self._tats.pop(limit.key, None)

    def states(self, limits: Sequence[Limit]) -> tuple[LimitState, ...]:
        """What each limit would report now, charging nothing."""
        return self._states(limits, self._clock())

    # -- internals ---------------------------------------------------------------------
    def _live_leases(self, key: str, now: float) -> OrderedDict[str, float]:
        leases = self._leases.get(key)
        if leases is None:
            return OrderedDict()
        while leases:
            lease_id, expiry = next(iter(leases.items()))
            if expiry > now:
                break
            del leases[lease_id]
        return leases

    def _lease(self, key: str, lease_id: str, now: float) -> OrderedDict[str, float]:
        leases = self._leases.setdefault(key, OrderedDict())
        leases.pop(lease_id, None)  # acquiring again refreshes the lease, at the back
        leases[lease_id] = now + self._lease_ttl_s
        return leases

    def _states(self, limits: Sequence[Limit], now: float) -> tuple[LimitState, ...]:
        states = []
        for limit in limits:
            if limit.kind is _CONCURRENCY:
                in_flight = len(self._live_leases(limit.key, now))
                states.append(LimitState(limit, max(0.0, limit.limit - in_flight), 0.0))
            else:
                tat = self._tats.get(limit.key)
                remaining, reset_s = gcra.state(tat, now, limit.interval_s, limit.burst)
                states.append(LimitState(limit, remaining, reset_s))
        return tuple(states)

    def _maybe_sweep(self, now: float) -> None:
        if self.counter_count <= self._sweep_size:
            return
        self._tats = {key: tat for key, tat in self._tats.items() if tat > now}
        for key in [key for key in self._leases if not self._live_leases(key, now)]:
            del self._leases[key]
        # Sweep again once the live set has doubled: each sweep is paid for by as many
        # decisions as it scanned counters.
        self._sweep_size = max(self._min_sweep_size, 2 * self.counter_count)
