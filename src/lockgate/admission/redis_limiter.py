"""``RedisLimiter``: limits shared by every replica, one Redis round trip per decision.

Each decision is run by a Lua script (``redis_script.BATCH_LUA``): it checks every
limit and, only if all admit, charges all of them. A script runs atomically,
so replicas never interleave between check and charge and a limit of 50
admits exactly 50 however many replicas ask at once. The decisions asked
during one turn of the event loop share one script call, which runs them one
after the other, in order, and answers each: one round trip still decides
each of them, and the gateway pays for one command per batch instead of one
per decision (see ``redis_batch.py``). Time is the server's (``TIME``), so
replicas with skewed clocks agree; it is shifted to a recent epoch so the
doubles Lua computes with keep sub-microsecond resolution. The GCRA check
and charge transliterate ``gcra.py`` (keep them in step); everything else
(remaining, reset) is computed here from what the script returns.

Redis layout, under the ``namespace`` prefix: a rate limit is a string
holding its TAT with a TTL that ends when the counter is full again (so an
idle counter disappears); a concurrency limit is a sorted set of lease ids
scored by expiry, expired members dropped on each check, and the key expires
with its newest lease. All keys must live on one server (for Redis Cluster,
put a hash tag in the namespace: ``"{lockgate}:limits:"``).

When Redis cannot answer within ``timeout_s`` (timeout, connection error,
any Redis error): fail-open limits are judged by an internal ``LocalLimiter``
(``degraded=True``; approximate across replicas: each grants the whole
allowance on its own), and if any limit of the call is fail-closed the
request is refused with ``unavailable=True``. A failure fails every call of
its batch alike. Failures are counted (per call) in ``backend_failures`` and
logged at most once per ``log_interval_s``. For ``recheck_after_s`` after a
failure, decisions go straight to the fallback, so an unresponsive Redis
costs one timeout per interval rather than one per request; then Redis is
tried again, and used again as soon as it answers.

Settling a request admitted in degraded mode happens locally, where it was
charged (the limiter remembers those lease ids until the lease TTL). Lease
releases that could not reach Redis, and the Redis leases of any acquire
whose answer was lost (the script may have run before the timeout) or whose
caller was cancelled while it waited, are queued and replayed with the next
settle that reaches Redis: releasing is idempotent, and otherwise a blip
would pin concurrency slots for a whole lease TTL. Token and spend
corrections lost to a failure are not replayed: they may have been applied
before the timeout, and charging twice is worse than once not at all.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict, deque
from collections.abc import Sequence

from lockgate.admission import gcra
from lockgate.admission.limiter import Decision, Limit, LimitKind, LimitState, check_call
from lockgate.admission.local import LocalLimiter
from lockgate.admission.redis_batch import BatchPipe
from lockgate.admission.redis_script import BATCH_LUA
from lockgate.admission.redis_wire import CORRECT, RELEASE, Op, Plan, Releases, bulk, bulk_number

log = logging.getLogger("lockgate.admission")


_MAX_PENDING_RELEASES = 10_000
_RELEASES_PER_SETTLE = 100
_PLAN_CACHE_MAX = 10_000
_INF = math.inf
_CONCURRENCY = LimitKind.CONCURRENCY
_SETTLED = frozenset(kind for kind in LimitKind if kind.is_settled)


class _Limits:
    """What this limiter needs of one sequence of limits, worked out once per tuple."""

    __slots__ = ("count", "limits", "plan", "settles", "specs")

    def __init__(self, limits: Sequence[Limit], namespace: str) -> None:
        check_call(limits)  # distinct keys, once: only the amounts are checked per call
        self.limits = limits
        self.count = len(limits)
        keys = [namespace + limit.key for limit in limits]
        is_rate = [limit.kind is not _CONCURRENCY for limit in limits]
        # Per limit: (limit, is a rate, interval_s, burst or most in flight).
        self.specs = tuple(
            (limit, rate, limit.interval_s if rate else 0.0, limit.burst if rate else limit.limit)
            for limit, rate in zip(limits, is_rate, strict=True)
        )
        self.plan = Plan(
            keys, is_rate, [spec[2] for spec in self.specs], [spec[3] for spec in self.specs]
        )
        # Per limit, for settle: (is a lease, is corrected, key, key packed, interval packed).
        self.settles = tuple(
            (
                not rate,
                limit.kind in _SETTLED,
                key,
                key_bulk,
                bulk_number(limit.interval_s) if rate else b"",
            )
            for limit, rate, key, key_bulk in zip(
                limits, is_rate, keys, self.plan.keys, strict=True
            )
        )


class RedisLimiter:
    """The ``Limiter`` protocol on Redis, shared by every replica; see the module docstring.

    Owns one connection (``close`` closes it). ``timeout_s`` bounds every call,
    connecting included; nothing is retried, since a retry would double that
    bound. ``settle_delay_s`` is how long a batch of settlements alone waits for
    decisions to share its round trip; ``max_batch`` caps the calls of one batch
    (a script call blocks Redis while it runs).
    """

    def __init__(
        self,
        url: str,
        *,
        namespace: str = "lockgate:limits:",
        timeout_s: float = 0.05,
        lease_ttl_s: float = 900.0,
        recheck_after_s: float = 0.5,
        log_interval_s: float = 10.0,
        settle_delay_s: float = 0.002,
        max_batch: int = 128,
    ) -> None:
        self.backend_failures = 0
        self._namespace = namespace
        self._timeout_s = timeout_s
        self._lease_ttl_s = lease_ttl_s
        self._recheck_after_s = recheck_after_s
        self._log_interval_s = log_interval_s
        self._pipe = BatchPipe(
            url,
            BATCH_LUA,
            timeout_s=timeout_s,
            lease_ttl_ms=math.ceil(lease_ttl_s * 1000),
            settle_delay_s=settle_delay_s,
            max_batch=max_batch,
            on_orphan=self._pending_releases_extend,
        )
        self._plans: dict[tuple[Limit, ...], _Limits] = {}
        self._plans_by_id: dict[int, _Limits] = {}
        self._local = LocalLimiter(lease_ttl_s=lease_ttl_s)
        # Lease ids admitted by the fallback -> when to forget them (monotonic), oldest first.
        self._degraded_leases: OrderedDict[str, float] = OrderedDict()
        # (namespaced key, lease id) to release in Redis once it answers again.
        self._pending_releases: deque[tuple[str, str]] = deque(maxlen=_MAX_PENDING_RELEASES)
        self._skip_until = 0.0
        self._is_failing = False
        self._logged_at = -math.inf
        self._unlogged_failures = 0

    async def acquire(
        self, limits: Sequence[Limit], costs: Sequence[float], lease_id: str
    ) -> Decision:
        plan = self._plan(limits)
        if len(costs) != plan.count:
            check_call(limits, costs)  # raises the error
        for cost in costs:
            if not 0.0 <= cost < _INF:
                check_call(limits, costs)
        if not plan.count:
            return Decision(admitted=True, states=())
        if time.monotonic() >= self._skip_until:
            outcome = await self._pipe.decide(plan.plan, costs, lease_id)
            if isinstance(outcome, list):
                try:
                    decision = _decision(plan, outcome)
                except Exception as exc:  # a malformed answer is a failure too
                    outcome = exc
                else:
                    if self._is_failing:
                        self._answered()
                    return decision
            # Any failure of the backend: judged below, never raised.
            assert isinstance(outcome, BaseException)
            self._failed("acquire", outcome)
            # The script may have run: release any lease it took, next time Redis answers.
            self._pending_releases.extend((key, lease_id) for key in plan.plan.lease_keys)
        return self._fallback(limits, costs, lease_id)

    async def settle(
        self,
        limits: Sequence[Limit],
        reserved: Sequence[float],
        actual: Sequence[float],
        lease_id: str,
    ) -> None:
        plan = self._plan(limits)
        count = plan.count
        if len(reserved) != count or len(actual) != count:
            check_call(limits, reserved, actual)  # raises the error
        for amount in (*reserved, *actual):
            if not 0.0 <= amount < _INF:
                check_call(limits, reserved, actual)
        if self._degraded_leases and self._degraded_leases.pop(lease_id, None) is not None:
            self._local.settle_now(limits, reserved, actual, lease_id)
            # Nothing of its own for Redis; only replay releases if Redis may be back.
            if not self._pending_releases or time.monotonic() < self._skip_until:
                return
            count = 0
        ops: list[Op] = []
        releases: Releases = []
        if self._pending_releases:
            for _ in range(min(_RELEASES_PER_SETTLE, len(self._pending_releases))):
                key, pending_lease_id = self._pending_releases.popleft()
                releases.append((key, pending_lease_id))
                ops.append((RELEASE, bulk(key.encode()), bulk(pending_lease_id.encode()), 3))
        if count:
            lease_bulk = b""
            for (is_lease, is_corrected, key, key_bulk, interval_arg), reserved_units, units in zip(
                plan.settles, reserved, actual, strict=True
            ):
                if is_lease:
                    if not lease_bulk:
                        lease_bulk = bulk(lease_id.encode())
                    releases.append((key, lease_id))
                    ops.append((RELEASE, key_bulk, lease_bulk, 3))
                elif is_corrected and units != reserved_units:
                    delta = bulk_number(units - reserved_units)
                    ops.append((CORRECT, key_bulk, interval_arg + delta, 4))
        if not ops:
            return
        outcome = await self._pipe.settle(ops, releases)
        if outcome is None:
            if self._is_failing:
                self._answered()
            return
        # settle never raises for the backend (the protocol's promise)
        assert isinstance(outcome, BaseException)
        self._failed("settle", outcome)
        self._pending_releases.extend(releases)

    async def close(self) -> None:
        await self._pipe.close()
        await self._local.close()

    # -- internals ---------------------------------------------------------------------
    def _plan(self, limits: Sequence[Limit]) -> _Limits:
        """The worked-out limits, cached by value (limits are immutable), and by identity
        for the tuple they were worked out from: the admission policies pass the same
        tuple for every request of one caller and model (kept by the plan, so its id is
        not reused while cached)."""
        plan = self._plans_by_id.get(id(limits))
        if plan is not None and plan.limits is limits:
            return plan
        key = limits if type(limits) is tuple else tuple(limits)
        plan = self._plans.get(key)
        if plan is None:
            plan = _Limits(key, self._namespace)
            if len(self._plans) >= _PLAN_CACHE_MAX:
                self._plans.clear()  # policies churn; working them out again is cheap
                self._plans_by_id.clear()
            self._plans[key] = plan
            self._plans_by_id[id(key)] = plan
        return plan

    def _pending_releases_extend(self, releases: Releases) -> None:
        self._pending_releases.extend(releases)

    def _fallback(self, limits: Sequence[Limit], costs: Sequence[float], lease_id: str) -> Decision:
        closed = next((limit for limit in limits if not limit.fail_open), None)
        if closed is not None:
            return Decision(
                admitted=False,
                states=self._local.states(limits),
                denied_by=closed,
                unavailable=True,
            )
        decision = self._local.decide(limits, costs, lease_id)
        if decision.admitted:
            now = time.monotonic()
            while self._degraded_leases:
                oldest, forget_at = next(iter(self._degraded_leases.items()))
                if forget_at > now:
                    break
                del self._degraded_leases[oldest]
            self._degraded_leases[lease_id] = now + self._lease_ttl_s
        return Decision(
            admitted=decision.admitted,
            states=decision.states,
            denied_by=decision.denied_by,
            retry_after_s=decision.retry_after_s,
            degraded=True,
        )

    def _failed(self, operation: str, exc: BaseException) -> None:
        self.backend_failures += 1
        now = time.monotonic()
        self._skip_until = now + self._recheck_after_s
        self._is_failing = True
        if now - self._logged_at < self._log_interval_s:
            self._unlogged_failures += 1
            return
        log.warning(
            "limiter: Redis failed on %s (%s); %d more failures since the last report; "
            "fail-open limits are judged locally, fail-closed ones refuse",
            operation,
            f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__,
            self._unlogged_failures,
        )
        self._logged_at = now
        self._unlogged_failures = 0

    def _answered(self) -> None:
        if self._is_failing:
            self._is_failing = False
            log.info("limiter: Redis answers again (%d failures so far)", self.backend_failures)


def _decision(plan: _Limits, tokens: list[bytes]) -> Decision:
    """A decision's tokens (see ``BATCH_LUA``) as a ``Decision`` (malformed ones raise)."""
    is_admitted = tokens[0] == b"1"
    states = []
    retry_after_s = 0.0
    index = 2
    for limit, is_rate, interval_s, size in plan.specs:
        value = float(tokens[index])
        if is_rate:
            remaining, reset_s = gcra.state_from_reset(value, interval_s, size)
            states.append(LimitState(limit, remaining, reset_s))
            if not is_admitted:
                retry_after_s = max(retry_after_s, float(tokens[index + 1]))
        else:
            states.append(LimitState(limit, max(0.0, size - value), 0.0))
        index += 2
    return Decision(
        admitted=is_admitted,
        states=tuple(states),
        denied_by=None if is_admitted else plan.limits[int(tokens[1]) - 1],
        retry_after_s=0.0 if is_admitted else round(retry_after_s, 6),
    )
