"""Outlier ejection and the circuit breaker as state machines, on a fake clock."""

from __future__ import annotations

import pytest

from lockgate.routing.health import Breaker, BreakerState, Outlier
from lockgate.routing.spec import BreakerSpec, OutlierSpec


def test_consecutive_failures_eject_and_a_success_resets_the_count() -> None:
    outlier = Outlier(OutlierSpec(consecutive_failures=3, base_ejection_s=5))
    assert not outlier.record_failure(0.0)
    assert not outlier.record_failure(0.1)
    outlier.record_success()  # the run is broken
    assert not outlier.record_failure(0.2)
    assert not outlier.record_failure(0.3)
    assert outlier.record_failure(0.4)
    assert outlier.ejected_until == pytest.approx(5.4)


def test_ejections_double_up_to_the_cap_and_probation_re_ejects_at_once() -> None:
    outlier = Outlier(OutlierSpec(consecutive_failures=2, base_ejection_s=1, max_ejection_s=5))
    assert not outlier.record_failure(0.0)
    assert outlier.record_failure(0.0)  # two in a row
    durations = [outlier.ejected_until]
    now = outlier.ejected_until
    for _ in range(4):
        # Back from ejection, on probation: a single failure ejects again, for longer.
        assert outlier.is_on_probation
        assert outlier.record_failure(now)
        durations.append(outlier.ejected_until - now)
        now = outlier.ejected_until
    assert durations == [1, 2, 4, 5, 5]
    outlier.record_success()
    assert not outlier.is_on_probation
    assert not outlier.record_failure(now)  # off probation: back to needing two


def test_failures_during_an_ejection_do_not_extend_it() -> None:
    outlier = Outlier(OutlierSpec(consecutive_failures=1, base_ejection_s=1))
    assert outlier.record_failure(0.0)
    assert not outlier.record_failure(0.5)  # a request sent before the ejection failing late
    assert outlier.ejected_until == 1.0
    assert outlier.ejections == 1


def test_a_long_healthy_spell_resets_the_back_off() -> None:
    outlier = Outlier(OutlierSpec(consecutive_failures=1, base_ejection_s=1, max_ejection_s=10))
    outlier.record_failure(0.0)
    outlier.record_success()
    outlier.record_failure(1.0)
    assert outlier.ejected_until == 3.0  # doubled: 2 s
    outlier.record_success()
    outlier.record_failure(100.0)  # healthy for longer than the longest ejection
    assert outlier.ejected_until == 101.0


def test_disabled_outlier_detection_never_ejects() -> None:
    outlier = Outlier(OutlierSpec(enabled=False, consecutive_failures=1))
    assert not any(outlier.record_failure(float(t)) for t in range(100))


def breaker(**fields: float) -> Breaker:
    settings = {"window": 4, "min_calls": 4, "failure_ratio": 0.5, "open_s": 10.0, **fields}
    return Breaker(BreakerSpec.model_validate(settings))


def record(b: Breaker, is_failure: bool, now: float = 0.0) -> None:
    if is_failure:
        b.record_failure(is_probe=False, now=now)
    else:
        b.record_success(is_probe=False)


def test_breaker_opens_on_the_failure_rate_not_before_min_calls() -> None:
    b = breaker()
    for is_failure in (True, True, False):
        record(b, is_failure)
    assert b.state is BreakerState.CLOSED  # 3 calls < min_calls
    record(b, False)
    assert b.state is BreakerState.CLOSED  # judged when a failure arrives
    record(b, True, now=1.0)
    assert b.state is BreakerState.OPEN  # 3 of the last 4 failed
    assert b.opened_until == 11.0
    assert not b.admits(5.0)


def test_breaker_window_slides() -> None:
    b = breaker(window=4, min_calls=4, failure_ratio=0.75)
    for is_failure in (True, True, False, False, False, True):
        record(b, is_failure)
    # The window holds the last four: False, False, False, True -> 1 failure in 4.
    assert b.state is BreakerState.CLOSED
    record(b, True)
    assert b.state is BreakerState.CLOSED  # False, False, True, True -> 2 of 4
    record(b, True)
    assert b.state is BreakerState.OPEN  # False, True, True, True -> 3 of 4


def test_half_open_lets_exactly_one_probe_through() -> None:
    b = breaker()
    for _ in range(4):
        record(b, True)
    assert b.state is BreakerState.OPEN
    assert not b.admits(9.9)
    assert b.admits(10.0)
    assert b.state is BreakerState.HALF_OPEN
    assert b.begin() is True  # this request is the probe
    assert not b.admits(10.1)  # nobody else while it is out
    b.record_failure(is_probe=True, now=10.5)
    assert b.state is BreakerState.OPEN
    assert b.opened_until == 20.5
    assert b.admits(20.5)
    assert b.begin()
    b.record_success(is_probe=True)
    assert b.state is BreakerState.CLOSED
    assert b.calls == 0  # a fresh window after closing
    assert b.admits(21.0)
    assert b.begin() is False


def test_a_probe_without_a_verdict_frees_the_slot() -> None:
    b = breaker()
    for _ in range(4):
        record(b, True)
    assert b.admits(10.0)
    b.begin()
    b.release_probe()  # the client left, or the upstream said 429
    assert b.state is BreakerState.HALF_OPEN
    assert b.admits(10.0)


def test_late_results_of_calls_sent_while_closed_do_not_count_once_open() -> None:
    b = breaker()
    for _ in range(4):
        record(b, True)
    record(b, False)
    record(b, True, now=1.0)
    assert b.state is BreakerState.OPEN
    assert b.opened_until == 10.0  # not re-opened by late results
