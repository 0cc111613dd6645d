"""``LocalLimiter``'s memory stays bounded by the counters in use."""

from __future__ import annotations

from lockgate.admission.limiter import Limit, LimitKind
from lockgate.admission.local import LocalLimiter
from tests.admission.conftest import FakeClock


def test_idle_full_counters_are_evicted_and_memory_stays_bounded() -> None:
    clock = FakeClock()
    limiter = LocalLimiter(clock=clock, sweep_min_size=64)
    peak = 0
    for index in range(20_000):
        clock.advance(0.01)
        # A new tenant every 10 ms, each full again 1 s later: ~100 counters in use.
        limit = Limit(f"key:{index}:rps", LimitKind.REQUESTS, 1, 1.0)
        assert limiter.decide([limit], [1], f"r{index}").admitted
        peak = max(peak, limiter.counter_count)
    assert peak <= 2 * 101 + 1


def test_live_counters_survive_sweeps() -> None:
    clock = FakeClock()
    limiter = LocalLimiter(clock=clock, sweep_min_size=8)
    indebted = Limit("key:big:tpm", LimitKind.TOKENS, 100, 60.0)
    assert limiter.decide([indebted], [100], "r").admitted
    limiter.settle_now([indebted], [100], [1000], "r")  # a 9-minute debt
    for index in range(1000):
        clock.advance(0.1)
        limit = Limit(f"key:{index}:rps", LimitKind.REQUESTS, 1, 0.05)
        limiter.decide([limit], [1], f"r{index}")
    assert limiter.counter_count <= 16
    assert not limiter.decide([indebted], [1], "r").admitted


def test_lease_sets_are_dropped_when_released_or_expired() -> None:
    clock = FakeClock()
    limiter = LocalLimiter(clock=clock, lease_ttl_s=1.0, sweep_min_size=32)
    for index in range(5000):
        clock.advance(0.05)
        limit = Limit(f"key:{index}:concurrency", LimitKind.CONCURRENCY, 2)
        assert limiter.decide([limit], [1], f"r{index}").admitted
        if index % 2:
            limiter.settle_now([limit], [1], [1], f"r{index}")  # released: gone at once
        # the others are never released (a lost request) and expire after 1 s
        assert limiter.counter_count <= 2 * 21 + 1
