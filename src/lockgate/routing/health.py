"""Per-deployment health: passive outlier ejection and a circuit breaker.

Both are plain state machines driven by the outcomes of real requests and a
clock passed in (``now``, event-loop seconds), so they are tested without a
network or sleeps. They answer different failures:

* **outlier ejection** reacts to a *run* of failures (a replica that died or
  hangs): N consecutive connect errors, timeouts or 5xx eject it at once;
* the **breaker** reacts to a *rate* (a replica failing one call in two while
  the rest succeed), which never produces a long enough run to eject.

Neither takes a deployment's word for recovery: after an ejection the first
failure ejects again (probation), and an open breaker lets exactly one probe
request through before it closes.
"""

from __future__ import annotations

from collections import deque
from enum import Enum

from lockgate.routing.spec import BreakerSpec, OutlierSpec


class Outlier:
    """Consecutive-failure ejection with back-off that doubles on repeat, capped."""

    __slots__ = (
        "_base_s",
        "_max_s",
        "_threshold",
        "consecutive",
        "ejected_until",
        "ejections",
        "ejections_total",
        "is_enabled",
        "is_on_probation",
    )

    def __init__(self, spec: OutlierSpec) -> None:
        self.is_enabled = spec.enabled
        self._threshold = spec.consecutive_failures
        self._base_s = spec.base_ejection_s
        self._max_s = spec.max_ejection_s
        self.consecutive = 0
        self.ejections = 0  # in the current streak of trouble; decays after a quiet spell
        self.ejections_total = 0  # ever, for metrics (never decays)
        self.ejected_until = 0.0
        self.is_on_probation = False

    def record_success(self) -> None:
        self.consecutive = 0
        self.is_on_probation = False

    def apply_ejection(self, until: float) -> bool:
        """Ejected until ``until`` by another process's evidence; True if that extends
        the current ejection. Counts in neither the back-off streak nor the totals: it
        is the same ejection, seen elsewhere."""
        if not self.is_enabled or until <= self.ejected_until:
            return False
        self.ejected_until = until
        self.consecutive = 0
        self.is_on_probation = True
        return True

    def record_failure(self, now: float) -> bool:
        """Count a failure; True if it ejected the deployment just now."""
        if not self.is_enabled or now < self.ejected_until:
            # Failures of requests sent before the ejection say nothing new.
            return False
        self.consecutive += 1
        threshold = 1 if self.is_on_probation else self._threshold
        if self.consecutive < threshold:
            return False
        # A deployment that stayed healthy for a whole maximum ejection starts over.
        if self.ejections and now - self.ejected_until > self._max_s:
            self.ejections = 0
        self.ejections += 1
        self.ejections_total += 1
        duration = min(self._max_s, self._base_s * 2.0 ** (self.ejections - 1))
        self.ejected_until = now + duration
        self.consecutive = 0
        self.is_on_probation = True
        return True


class BreakerState(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Breaker:
    """Closed → open on a failure rate over the last ``window`` calls → half-open after
    ``open_s`` → one probe: success closes, failure opens again.

    The window keeps only the positions of its failures (a deque of call numbers), so a
    success — nearly every call — costs one addition. The rate is judged when a failure
    arrives: "this failure makes ≥ ``failure_ratio`` of the last ``window`` calls, and there
    were at least ``min_calls``". Calls that started before the breaker opened are not
    counted once it has.
    """

    __slots__ = (
        "_failures",
        "_min_calls",
        "_open_s",
        "_ratio",
        "_size",
        "calls",
        "is_probe_in_flight",
        "opened_until",
        "opens_total",
        "state",
    )

    def __init__(self, spec: BreakerSpec) -> None:
        self._size = spec.window
        self._min_calls = spec.min_calls
        self._ratio = spec.failure_ratio
        self._open_s = spec.open_s
        self._failures: deque[int] = deque()
        self.calls = 0  # since the breaker last closed
        self.state = BreakerState.CLOSED
        self.opened_until = 0.0
        self.is_probe_in_flight = False
        self.opens_total = 0  # times it opened, for metrics

    def admits(self, now: float) -> bool:
        """Whether a request may be sent now. Moves open → half-open once ``open_s`` passed."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.OPEN:
            if now < self.opened_until:
                return False
            self.state = BreakerState.HALF_OPEN
            self.is_probe_in_flight = False
        return not self.is_probe_in_flight

    def begin(self) -> bool:
        """A request was sent; True if it is the half-open probe (the only one let through)."""
        if self.state is BreakerState.HALF_OPEN:
            self.is_probe_in_flight = True
            return True
        return False

    def record_success(self, is_probe: bool) -> None:
        if is_probe:
            self.is_probe_in_flight = False
            self.state = BreakerState.CLOSED
            self._failures.clear()
            self.calls = 0
        elif self.state is BreakerState.CLOSED:
            self.calls += 1

    def record_failure(self, is_probe: bool, now: float) -> None:
        if is_probe:
            self.is_probe_in_flight = False
            self._open(now)
            return
        if self.state is not BreakerState.CLOSED:
            return
        self.calls = calls = self.calls + 1
        failures = self._failures
        failures.append(calls)
        oldest = calls - self._size  # call numbers at or below this left the window
        while failures[0] <= oldest:
            failures.popleft()
        in_window = min(calls, self._size)
        if in_window >= self._min_calls and len(failures) >= self._ratio * in_window:
            self._open(now)

    def force_open(self, now: float, open_s: float) -> bool:
        """Open a closed breaker for ``open_s`` (told by another replica); True if it was."""
        if self.state is not BreakerState.CLOSED:
            return False
        self.state = BreakerState.OPEN
        self.opened_until = now + open_s
        self.opens_total += 1
        return True

    def release_probe(self) -> None:
        """The probe ended without a verdict (client left, 429): let another one go."""
        self.is_probe_in_flight = False

    def _open(self, now: float) -> None:
        self.state = BreakerState.OPEN
        self.opened_until = now + self._open_s
        self.opens_total += 1
