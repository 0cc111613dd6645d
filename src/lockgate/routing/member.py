"""The live state of one deployment, and the lease a request holds on it.

A ``Member`` is what strategies compare (outstanding requests, load score,
latency) and what health acts on (ejection, breaker, active checks, an
upstream's Retry-After). A ``Lease`` is one attempt's claim on a member: taken
when the attempt is chosen, ended exactly once with its outcome, which is how
outstanding counts stay exact whatever happens to the request.

State is per worker process: every worker sees its own traffic and judges
health from it (no cross-process chatter on the hot path).
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import TYPE_CHECKING

from lockgate.config import DeploymentTarget
from lockgate.routing.health import Breaker, BreakerState, Outlier
from lockgate.routing.spec import ModelRoutingSpec

if TYPE_CHECKING:
    from lockgate.routing.engine_load import EngineReading

# Weight of a new TTFT sample in the moving average: about the last ten requests count.
_EWMA_ALPHA = 0.2
# A latency older than this is not trusted: the deployment gets a request to re-measure.
_LATENCY_STALE_S = 30.0
# Longest an upstream's Retry-After keeps a deployment out of first choice.
_MAX_THROTTLE_S = 300.0


class Outcome(Enum):
    SUCCESS = "success"  # answered (any status below 500 but 429): the deployment works
    FAILURE = "failure"  # connect error, timeout, 5xx, broken stream: counts against health
    NEUTRAL = "neutral"  # 429, client gone, not sent: says nothing about health


class Member:
    """One deployment's live state. ``blocked_until`` and ``is_restricted`` summarise
    health for the hot path (``Pool.choose`` reads two attributes per member in the
    common case); ``admits`` is the full answer, asked only when they say "maybe"."""

    __slots__ = (
        "active_failures",
        "active_successes",
        "blocked_until",
        "breaker",
        "capacity",
        "engine",
        "is_restricted",
        "is_up",
        "on_breaker_open",
        "on_ejected",
        "outlier",
        "outstanding",
        "target",
        "throttled_until",
        "throttles",
        "ttft_at",
        "ttft_s",
        "weight",
    )

    def __init__(self, target: DeploymentTarget, spec: ModelRoutingSpec) -> None:
        self.target = target
        self.weight = target.weight
        # Without a declared capacity every replica counts as one slot, so the load
        # score degrades to the outstanding count.
        self.capacity = float(target.capacity or 1)
        self.outstanding = 0
        self.ttft_s: float | None = None
        self.ttft_at = 0.0
        self.outlier = Outlier(spec.outlier)
        self.breaker: Breaker | None = Breaker(spec.breaker) if spec.breaker.enabled else None
        # Told when this member's own failures open its breaker (shared across replicas).
        self.on_breaker_open: Callable[[Member], None] | None = None
        # Told when this member's own failures eject it (shared across replicas too).
        self.on_ejected: Callable[[Member], None] | None = None
        self.throttled_until = 0.0
        self.throttles = 0  # 429/503 answers in a row (a success resets it)
        # The engine's own last report (routing.engine_metrics), or None.
        self.engine: EngineReading | None = None
        # Active health checks: optimistic until a check says otherwise, so a gateway
        # serves from its first second instead of waiting for a round of probes.
        self.is_up = True
        self.active_failures = 0
        self.active_successes = 0
        # Ejected or breaker open until then; restricted: breaker not closed or checks down.
        self.blocked_until = 0.0
        self.is_restricted = False

    @property
    def name(self) -> str:
        return self.target.name

    def admits(self, now: float) -> bool:
        """May a request be sent here now? (Not ejected, breaker lets it, checks pass.)"""
        if now < self.outlier.ejected_until or not self.is_up:
            return False
        breaker = self.breaker
        return breaker is None or breaker.admits(now)

    def available_at(self, now: float) -> float:
        """When the member is expected back (for Retry-After on a 503); ``now`` if unknown."""
        return max(self.blocked_until, now)

    def load(self) -> float:
        """Load score for power-of-two choices: work in flight per unit of capacity
        (with engine metrics, as ``routing/engine_load.py`` explains)."""
        engine = self.engine
        if engine is None:
            return (self.outstanding + 1) / self.capacity
        return (self.pressure() + 1) / self.capacity * (1.0 + engine.kv_cache_use)

    def pressure(self) -> float:
        """Requests in flight or queued at the engine, ours or anyone's; queued ones
        count twice. Without engine metrics, this worker's outstanding count."""
        engine = self.engine
        if engine is None:
            return self.outstanding
        busy = max(float(self.outstanding), engine.running + engine.waiting)
        return (busy + engine.waiting) * (1.0 + engine.kv_cache_use)

    def latency_s(self, now: float) -> float | None:
        """The TTFT moving average, or None when never measured or gone stale."""
        if self.ttft_s is None or now - self.ttft_at > _LATENCY_STALE_S:
            return None
        return self.ttft_s

    def lease(self) -> Lease:
        self.outstanding += 1
        # Only a restricted member can be half-open: healthy ones skip the breaker.
        breaker = self.breaker
        return Lease(self, self.is_restricted and breaker is not None and breaker.begin())

    def throttle(self, retry_after_s: float, now: float) -> None:
        self.throttled_until = max(self.throttled_until, now + min(retry_after_s, _MAX_THROTTLE_S))

    def record_check(self, is_ok: bool, healthy_threshold: int, unhealthy_threshold: int) -> None:
        """An active health check's result; thresholds stop one blip from flapping the state."""
        if is_ok:
            self.active_failures = 0
            self.active_successes += 1
            if not self.is_up and self.active_successes >= healthy_threshold:
                self.is_up = True
        else:
            self.active_successes = 0
            self.active_failures += 1
            if self.is_up and self.active_failures >= unhealthy_threshold:
                self.is_up = False
        self._summarise()

    def record(self, outcome: Outcome, is_probe: bool, now: float) -> None:
        """Teach health what an attempt's outcome was (``Lease.end`` calls this)."""
        breaker = self.breaker
        if outcome is Outcome.SUCCESS:
            if self.throttles:
                self.throttles = 0
            outlier = self.outlier
            if outlier.consecutive or outlier.is_on_probation:
                outlier.record_success()
            if breaker is not None:
                breaker.record_success(is_probe)
                if is_probe:
                    self._summarise()
        elif outcome is Outcome.FAILURE:
            if self.outlier.record_failure(now) and self.on_ejected is not None:
                self.on_ejected(self)
            if breaker is not None:
                opens = breaker.opens_total
                breaker.record_failure(is_probe, now)
                if breaker.opens_total != opens and self.on_breaker_open is not None:
                    self.on_breaker_open(self)
            self._summarise()
        elif is_probe and breaker is not None:
            breaker.release_probe()

    def open_breaker(self, now: float, open_s: float) -> bool:
        """Open the breaker for ``open_s`` because another replica's opened (its failures
        are this deployment's too); False if it is not closed or there is none. Ends, as
        any open, in a half-open probe of this replica's own."""
        breaker = self.breaker
        if breaker is None or not breaker.force_open(now, open_s):
            return False
        self._summarise()
        return True

    def eject_for(self, now: float, duration_s: float) -> bool:
        """Eject for ``duration_s`` because another process did (its failures are this
        deployment's too); False if already ejected at least that long. Ends, as any
        ejection, on probation: this process's first failure ejects again."""
        if not self.outlier.apply_ejection(now + duration_s):
            return False
        self._summarise()
        return True

    def sample_ttft(self, ttft_s: float, now: float) -> None:
        previous = self.ttft_s
        if previous is None or now - self.ttft_at > _LATENCY_STALE_S:
            self.ttft_s = ttft_s
        else:
            self.ttft_s = previous + _EWMA_ALPHA * (ttft_s - previous)
        self.ttft_at = now

    def _summarise(self) -> None:
        breaker = self.breaker
        blocked_until = self.outlier.ejected_until
        is_restricted = not self.is_up
        if breaker is not None and breaker.state is not BreakerState.CLOSED:
            is_restricted = True
            if breaker.state is BreakerState.OPEN:
                blocked_until = max(blocked_until, breaker.opened_until)
        self.blocked_until = blocked_until
        self.is_restricted = is_restricted


class Lease:
    """One attempt's claim on a member; ``end`` releases it exactly once."""

    __slots__ = ("is_ended", "is_probe", "member")

    def __init__(self, member: Member, is_probe: bool) -> None:
        self.member = member
        self.is_probe = is_probe
        self.is_ended = False

    @property
    def target(self) -> DeploymentTarget:
        return self.member.target

    def end(self, outcome: Outcome, now: float, ttft_s: float | None = None) -> None:
        """Release the claim and teach the member what happened; later calls do nothing."""
        if self.is_ended:
            return
        self.is_ended = True
        member = self.member
        member.outstanding -= 1
        member.record(outcome, self.is_probe, now)
        if ttft_s is not None and outcome is Outcome.SUCCESS:
            member.sample_ttft(ttft_s, now)
