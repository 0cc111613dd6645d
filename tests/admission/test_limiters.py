"""Behaviour every limiter shares, run against ``LocalLimiter`` and ``RedisLimiter`` alike.

Rate periods are long (an hour) wherever a count must be exact, so the real
clock (Redis's) refills nothing that matters during a test.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from lockgate.admission.limiter import Limit, LimitKind
from tests.admission.conftest import Limiters

HOUR = 3600.0


def limits_abc() -> tuple[Limit, Limit, Limit]:
    return (
        Limit("key:a:rph", LimitKind.REQUESTS, 5, HOUR),
        Limit("project:p:tph", LimitKind.TOKENS, 100, HOUR),
        Limit("key:a:concurrency", LimitKind.CONCURRENCY, 3),
    )


async def test_all_or_nothing_a_refusal_charges_no_other_limit(limiters: Limiters) -> None:
    limiter = limiters.new()
    rph, tph, conc = limits_abc()
    assert (await limiter.acquire([tph], [95], "r0")).admitted
    for index in range(3):
        refused = await limiter.acquire([rph, tph, conc], [1, 10, 1], f"r{index + 1}")
        assert not refused.admitted
        assert refused.denied_by == tph
        assert not refused.degraded
        assert not refused.unavailable
        assert [round(state.remaining, 2) for state in refused.states] == [5, 5, 3]
    admitted = await limiter.acquire([rph, tph, conc], [1, 5, 1], "r9")
    assert admitted.admitted
    assert admitted.denied_by is None
    assert admitted.retry_after_s == 0
    assert [round(state.remaining, 2) for state in admitted.states] == [4, 0, 2]


async def test_denied_by_is_the_first_refusing_limit_in_order(limiters: Limiters) -> None:
    limiter = limiters.new()
    rph, tph, conc = limits_abc()
    assert (await limiter.acquire([rph, tph], [5, 100], "r0")).admitted
    refused = await limiter.acquire([conc, tph, rph], [1, 1, 1], "r1")
    assert refused.denied_by == tph
    # The same request needs one request of five per hour back: 720 s; one token: 36 s.
    assert refused.retry_after_s == pytest.approx(720, abs=0.5)


async def test_concurrency_leases_acquire_release_and_reacquire(limiters: Limiters) -> None:
    limiter = limiters.new()
    conc = Limit("key:a:concurrency", LimitKind.CONCURRENCY, 2)
    assert (await limiter.acquire([conc], [1], "a")).admitted
    held = await limiter.acquire([conc], [1], "b")
    assert held.admitted
    assert held.states[0].remaining == 0
    refused = await limiter.acquire([conc], [1], "c")
    assert (refused.admitted, refused.denied_by, refused.retry_after_s) == (False, conc, 0)
    again = await limiter.acquire([conc], [1], "b")  # the same request asking again
    assert again.admitted
    assert again.states[0].remaining == 0
    await limiter.settle([conc], [1], [1], "a")
    assert (await limiter.acquire([conc], [1], "c")).admitted
    await limiter.settle([conc], [1], [1], "b")
    await limiter.settle([conc], [1], [1], "c")
    await limiter.settle([conc], [1], [1], "c")  # twice: harmless
    assert (await limiter.acquire([conc], [1], "d")).states[0].remaining == 1


async def test_a_lease_never_released_expires_after_the_ttl(limiters: Limiters) -> None:
    limiter = limiters.new(lease_ttl_s=0.3)
    conc = Limit("key:a:concurrency", LimitKind.CONCURRENCY, 1)
    assert (await limiter.acquire([conc], [1], "lost")).admitted
    assert not (await limiter.acquire([conc], [1], "next")).admitted
    await asyncio.sleep(0.35)
    assert (await limiter.acquire([conc], [1], "next")).admitted


async def test_settle_refunds_and_charges_tokens(limiters: Limiters) -> None:
    limiter = limiters.new()
    rph, tph, conc = limits_abc()
    assert (await limiter.acquire([rph, tph, conc], [1, 60, 1], "r1")).admitted
    await limiter.settle([rph, tph, conc], [1, 60, 1], [1, 20, 1], "r1")
    after = await limiter.acquire([rph, tph, conc], [1, 0, 1], "r2")
    # rph keeps its charge (a request is a request); 40 tokens came back; the lease is free.
    assert [round(state.remaining, 2) for state in after.states] == [3, 80, 2]
    await limiter.settle([tph], [0], [90], "r2")
    refused = await limiter.acquire([tph], [1], "r3")
    assert not refused.admitted
    assert refused.states[0].reset_s == pytest.approx(110 * 36, abs=1)


async def test_tokens_overshoot_is_bounded_by_one_request(limiters: Limiters) -> None:
    """Requests reserve a 10-token estimate and use 400: each settlement is charged before
    the next admission, so the limit is exceeded by at most one request's underestimate."""
    limiter = limiters.new()
    tpm = Limit("key:a:tpm", LimitKind.TOKENS, 1000, 60.0)
    estimate, actual = 10, 400
    used, admitted = 0, 0
    started = time.monotonic()
    for index in range(40):
        decision = await limiter.acquire([tpm], [estimate], f"r{index}")
        if decision.admitted:
            admitted += 1
            used += actual
            await limiter.settle([tpm], [estimate], [actual], f"r{index}")
    refilled = (time.monotonic() - started) * 1000 / 60.0
    assert used <= tpm.burst + refilled + (actual - estimate)
    assert admitted == 3  # 400, 800, 1200: the third fit its estimate, then overshot


async def test_an_empty_call_admits(limiters: Limiters) -> None:
    limiter = limiters.new()
    decision = await limiter.acquire([], [], "r")
    assert decision.admitted
    assert decision.states == ()
    await limiter.settle([], [], [], "r")


async def test_malformed_calls_raise(limiters: Limiters) -> None:
    limiter = limiters.new()
    rph, tph, _ = limits_abc()
    with pytest.raises(ValueError, match="amounts"):
        await limiter.acquire([rph, tph], [1], "r")
    with pytest.raises(ValueError, match=">= 0"):
        await limiter.acquire([rph], [-1], "r")
    with pytest.raises(ValueError, match="distinct"):
        await limiter.acquire([rph, rph], [1, 1], "r")
    with pytest.raises(ValueError, match="amounts"):
        await limiter.settle([tph], [1], [], "r")
