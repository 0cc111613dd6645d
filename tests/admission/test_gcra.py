"""GCRA arithmetic, exact to the microsecond with a hand-moved clock (``LocalLimiter``)."""

from __future__ import annotations

import pytest

from lockgate.admission import gcra
from lockgate.admission.limiter import Decision, Limit, LimitKind
from lockgate.admission.local import LocalLimiter
from tests.admission.conftest import FakeClock

RPM = Limit("key:a:rpm", LimitKind.REQUESTS, 60, 60.0)
TPM = Limit("key:a:tpm", LimitKind.TOKENS, 1000, 60.0)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def limiter(clock: FakeClock) -> LocalLimiter:
    return LocalLimiter(clock=clock)


def take(limiter: LocalLimiter, limit: Limit, cost: float = 1, lease_id: str = "r") -> Decision:
    return limiter.decide([limit], [cost], lease_id)


def test_burst_defaults_to_the_whole_limit_and_refills_one_unit_per_interval(
    limiter: LocalLimiter, clock: FakeClock
) -> None:
    assert RPM.burst == 60
    assert all(take(limiter, RPM).admitted for _ in range(60))
    refused = take(limiter, RPM)
    assert not refused.admitted
    assert refused.denied_by == RPM
    assert refused.retry_after_s == 1.0
    clock.advance(0.999)
    assert take(limiter, RPM).retry_after_s == pytest.approx(0.001)
    clock.advance(0.001)
    assert take(limiter, RPM).admitted
    assert not take(limiter, RPM).admitted


def test_a_small_burst_then_the_steady_rate(limiter: LocalLimiter, clock: FakeClock) -> None:
    limit = Limit("key:a:rps", LimitKind.REQUESTS, 10, 1.0, burst=2)
    start = clock.now
    admitted = 0
    for step in range(1001):  # one attempt every 10 ms for 10 s
        clock.now = start + step * 0.01
        admitted += take(limiter, limit).admitted
    # burst + rate x duration, exactly: the steady state admits one per 100 ms.
    assert admitted == 2 + 100


def test_variable_cost_remaining_and_reset(limiter: LocalLimiter, clock: FakeClock) -> None:
    first = take(limiter, TPM, 250)
    assert first.admitted
    [state] = first.states
    assert (state.remaining, state.reset_s) == (750, 15.0)  # 250 tokens x 60 ms
    clock.advance(5)
    [state] = limiter.states([TPM])
    assert state.remaining == pytest.approx(750 + 5 / 0.06, abs=1e-6)
    assert state.reset_s == 10.0
    assert take(limiter, TPM, 833).admitted
    refused = take(limiter, TPM, 2)
    assert not refused.admitted
    # 0.333… tokens left; 2 need 1.666… more at 60 ms each.
    assert refused.retry_after_s == pytest.approx(0.1, abs=1e-6)


def test_retry_after_is_exact(limiter: LocalLimiter, clock: FakeClock) -> None:
    assert take(limiter, TPM, 1000).admitted
    refused = take(limiter, TPM, 300)
    assert refused.retry_after_s == 18.0
    [state] = refused.states
    assert (state.remaining, state.reset_s) == (0, 60.0)
    clock.advance(refused.retry_after_s - 0.001)
    assert not take(limiter, TPM, 300).admitted
    clock.advance(0.001)
    assert take(limiter, TPM, 300).admitted


def test_retry_after_covers_every_limit_not_just_the_first_refusal(
    limiter: LocalLimiter, clock: FakeClock
) -> None:
    rps = Limit("key:a:rps", LimitKind.REQUESTS, 1, 1.0)
    assert limiter.decide([rps, TPM], [1, 1000], "r1").admitted
    refused = limiter.decide([rps, TPM], [1, 100], "r2")
    assert refused.denied_by == rps
    assert refused.retry_after_s == 6.0  # the rps limit alone would say 1 s
    clock.advance(6.0)
    assert limiter.decide([rps, TPM], [1, 100], "r3").admitted


def test_settle_refunds_but_never_beyond_a_full_bucket(
    limiter: LocalLimiter, clock: FakeClock
) -> None:
    assert take(limiter, TPM, 500).admitted
    limiter.settle_now([TPM], [500], [100], "r")
    [state] = limiter.states([TPM])
    assert (state.remaining, state.reset_s) == (900, 6.0)
    limiter.settle_now([TPM], [500], [0], "r")  # a refund larger than what is used
    [state] = limiter.states([TPM])
    assert (state.remaining, state.reset_s) == (1000, 0.0)
    assert limiter.counter_count == 0  # a full counter is not kept


def test_settle_charges_a_debt_that_later_requests_wait_for(
    limiter: LocalLimiter, clock: FakeClock
) -> None:
    assert take(limiter, TPM, 100).admitted
    limiter.settle_now([TPM], [100], [1500], "r")
    [state] = limiter.states([TPM])
    assert (state.remaining, state.reset_s) == (0, 90.0)
    refused = take(limiter, TPM, 1)
    assert refused.retry_after_s == pytest.approx(90.0 - 999 * 0.06)


def test_a_debt_is_not_absorbed_by_time_already_refilled(
    limiter: LocalLimiter, clock: FakeClock
) -> None:
    assert take(limiter, TPM, 100).admitted
    clock.advance(120)  # full again long before the answer is settled
    limiter.settle_now([TPM], [100], [1100], "r")
    [state] = limiter.states([TPM])
    assert (state.remaining, state.reset_s) == (0, 60.0)


def test_requests_limits_are_not_settled(limiter: LocalLimiter) -> None:
    assert take(limiter, RPM).admitted
    limiter.settle_now([RPM], [1], [0], "r")
    assert limiter.states([RPM])[0].remaining == 59


def test_an_oversize_cost_passes_only_on_a_full_bucket_and_leaves_a_debt(
    limiter: LocalLimiter, clock: FakeClock
) -> None:
    assert take(limiter, TPM, 1).admitted
    refused = take(limiter, TPM, 1500)
    assert not refused.admitted
    assert refused.retry_after_s == pytest.approx(0.06)  # until the bucket is full
    clock.advance(0.06)
    admitted = take(limiter, TPM, 1500)
    assert admitted.admitted
    [state] = admitted.states
    assert (state.remaining, state.reset_s) == (0, 90.0)
    # Everything waits while the debt is paid: the long-run rate holds.
    assert take(limiter, TPM, 1).retry_after_s == pytest.approx(90.0 - 999 * 0.06)
    assert take(limiter, TPM, 1500).retry_after_s == 90.0
    clock.advance(89.999)
    assert not take(limiter, TPM, 1500).admitted
    clock.advance(0.001)
    assert take(limiter, TPM, 1500).admitted


def test_a_zero_cost_is_admitted_unless_in_debt(limiter: LocalLimiter) -> None:
    assert take(limiter, TPM, 1000).admitted
    assert take(limiter, TPM, 0).admitted
    limiter.settle_now([TPM], [0], [60], "r")
    assert not take(limiter, TPM, 0).admitted


def test_pure_functions_agree_with_the_model() -> None:
    interval_s, burst = 0.06, 1000.0
    assert gcra.state(None, 5.0, interval_s, burst) == (1000, 0)
    verdict = gcra.check(None, 5.0, 400, interval_s, burst)
    assert verdict.is_admitted
    assert verdict.tat == pytest.approx(5.0 + 24.0)
    assert gcra.state(verdict.tat, 5.0, interval_s, burst) == (600, 24.0)
    assert gcra.settle(verdict.tat, 5.0, -1000, interval_s) == 5.0  # never below now
    assert gcra.settle(1.0, 5.0, 10, interval_s) == pytest.approx(5.6)  # from now, not TAT


def test_float_rounding_never_refuses_a_cost_that_exactly_fits() -> None:
    limiter = LocalLimiter(clock=lambda: 4e7)  # as large as the Redis script's times
    limit = Limit("key:a:odd", LimitKind.TOKENS, 7, 3.0)
    assert all(limiter.decide([limit], [0.1], f"r{i}").admitted for i in range(70))
    assert not limiter.decide([limit], [0.1], "r70").admitted


def test_limit_validation() -> None:
    assert Limit("k", LimitKind.REQUESTS, 5, 1.0, burst=2).burst == 2
    assert Limit("k", LimitKind.CONCURRENCY, 5).burst == 5
    with pytest.raises(ValueError, match="positive"):
        Limit("k", LimitKind.REQUESTS, 0, 1.0)
    with pytest.raises(ValueError, match="period_s"):
        Limit("k", LimitKind.TOKENS, 5)
    with pytest.raises(ValueError, match="burst"):
        Limit("k", LimitKind.TOKENS, 5, 1.0, burst=-1)
    with pytest.raises(ValueError, match="key"):
        Limit("", LimitKind.TOKENS, 5, 1.0)
