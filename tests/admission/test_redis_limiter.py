"""``RedisLimiter`` specifics: exactness across replicas, its Redis layout, and Redis failing.

Tests that kill or freeze Redis use a private ``redis-server`` on a free port
(the ``private_redis`` fixture), so the shared one is never disturbed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import time
from pathlib import Path

import pytest
from redis.asyncio import Redis

from lockgate.admission.limiter import Limit, LimitKind
from lockgate.admission.redis_limiter import RedisLimiter
from tests.admission.conftest import PATIENT_TIMEOUT_S, PrivateRedis

REPO_ROOT = Path(__file__).resolve().parents[2]
HOUR = 3600.0
OPEN_RPH = Limit("key:a:rph", LimitKind.REQUESTS, 3, HOUR, fail_open=True)
CLOSED_RPH = Limit("org:o:rph", LimitKind.REQUESTS, 100, HOUR, fail_open=False)
OPEN_CONC = Limit("key:a:concurrency", LimitKind.CONCURRENCY, 1, fail_open=True)
# Well within: a bound on hanging, not a performance test.
PROMPT_S = 1.0


async def test_replicas_with_their_own_pools_admit_exactly_the_limit(
    redis_url: str, namespace: str
) -> None:
    replicas = [
        RedisLimiter(redis_url, namespace=namespace, timeout_s=PATIENT_TIMEOUT_S) for _ in range(4)
    ]
    rph = Limit("shared:rph", LimitKind.REQUESTS, 50, HOUR)
    conc = Limit("shared:concurrency", LimitKind.CONCURRENCY, 7)
    try:
        rates = await asyncio.gather(
            *(replicas[i % 4].acquire([rph], [1], f"r{i}") for i in range(200))
        )
        leases = await asyncio.gather(
            *(replicas[i % 4].acquire([conc], [1], f"c{i}") for i in range(200))
        )
    finally:
        for replica in replicas:
            await replica.close()
    assert not any(decision.degraded for decision in rates + leases)
    assert sum(decision.admitted for decision in rates) == 50
    assert sum(decision.admitted for decision in leases) == 7


async def _spawn_replica(
    url: str, namespace: str, *, limit: int, count: int
) -> asyncio.subprocess.Process:
    code = "import sys; from tests.admission.child import main; main(sys.argv[1:])"
    pipe = asyncio.subprocess.PIPE
    arguments = [url, namespace, str(limit), str(count)]
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, *arguments, cwd=REPO_ROOT, stdin=pipe, stdout=pipe, stderr=pipe
    )


async def test_replicas_in_separate_processes_admit_exactly_the_limit(
    redis_url: str, namespace: str
) -> None:
    children = [await _spawn_replica(redis_url, namespace, limit=50, count=50) for _ in range(4)]
    try:
        for child in children:
            assert child.stdout is not None
            assert await asyncio.wait_for(child.stdout.readline(), 30) == b"ready\n"
        for child in children:
            assert child.stdin is not None
            child.stdin.write(b"go\n")
            await child.stdin.drain()
        results = []
        for child in children:
            stdout, stderr = await asyncio.wait_for(child.communicate(), 30)
            assert child.returncode == 0, stderr.decode()
            results.append(json.loads(stdout))
    finally:
        for child in children:
            if child.returncode is None:
                child.kill()
                await child.wait()
    assert sum(result["degraded"] for result in results) == 0
    assert sum(result["admitted"] for result in results) == 50


async def test_counters_are_namespaced_expire_when_full_and_vanish_when_refunded(
    redis_url: str, namespace: str
) -> None:
    limiter = RedisLimiter(redis_url, namespace=namespace, timeout_s=PATIENT_TIMEOUT_S)
    tpm = Limit("key:a:tpm", LimitKind.TOKENS, 1000, 60.0)
    conc = Limit("key:a:concurrency", LimitKind.CONCURRENCY, 2)
    client = Redis.from_url(redis_url)
    try:
        assert (await limiter.acquire([tpm, conc], [250, 1], "r1")).admitted
        # Full again 15 s from now: that is when the counter may disappear.
        assert 14_000 < await client.pttl(f"{namespace}key:a:tpm") <= 15_000
        assert 899_000 < await client.pttl(f"{namespace}key:a:concurrency") <= 900_000
        await limiter.settle([tpm, conc], [250, 1], [0, 1], "r1")
        assert await client.exists(f"{namespace}key:a:tpm", f"{namespace}key:a:concurrency") == 0
    finally:
        await client.aclose()
        await limiter.close()


async def test_a_flushed_script_cache_is_reloaded(private_redis: PrivateRedis) -> None:
    limiter = RedisLimiter(private_redis.url, namespace="t:", timeout_s=PATIENT_TIMEOUT_S)
    client = private_redis.client()
    try:
        assert (await limiter.acquire([OPEN_RPH], [1], "r1")).admitted
        await client.script_flush()
        decision = await limiter.acquire([OPEN_RPH], [1], "r2")
        assert (decision.admitted, decision.degraded) == (True, False)
        assert decision.states[0].remaining == pytest.approx(1, abs=0.01)
    finally:
        await client.aclose()
        await limiter.close()


async def _timed_acquire(
    limiter: RedisLimiter, limits: list[Limit], lease_id: str
) -> tuple[float, bool, bool, bool]:
    started = time.monotonic()
    decision = await limiter.acquire(limits, [1] * len(limits), lease_id)
    elapsed_s = time.monotonic() - started
    return elapsed_s, decision.admitted, decision.degraded, decision.unavailable


async def test_redis_killed_then_restarted(private_redis: PrivateRedis) -> None:
    limiter = RedisLimiter(private_redis.url, namespace="t:", recheck_after_s=0.05)
    client = private_redis.client()
    try:
        # Warm (connection, script); retried because the 50 ms default may miss on a busy box.
        for attempt in range(20):
            decision = await limiter.acquire([OPEN_RPH], [0], f"warm{attempt}")
            if not decision.degraded:
                break
            await asyncio.sleep(0.1)
        await private_redis.kill()

        elapsed_s, admitted, degraded, unavailable = await _timed_acquire(limiter, [OPEN_RPH], "r1")
        assert (admitted, degraded, unavailable) == (True, True, False)
        assert elapsed_s < PROMPT_S
        elapsed_s, admitted, degraded, unavailable = await _timed_acquire(
            limiter, [OPEN_RPH, CLOSED_RPH], "r2"
        )
        assert (admitted, degraded, unavailable) == (False, False, True)
        assert elapsed_s < PROMPT_S
        # Fail-open limits are still enforced, locally: 3 per hour.
        decisions = [await limiter.acquire([OPEN_RPH], [1], f"r{i}") for i in range(3, 6)]
        assert [(d.admitted, d.degraded) for d in decisions] == [(True, True)] * 2 + [(False, True)]
        assert decisions[-1].denied_by == OPEN_RPH
        assert limiter.backend_failures >= 1
        await limiter.settle([OPEN_RPH], [1], [1], "r1")  # never raises

        await private_redis.start()  # same port, empty
        for _ in range(100):  # the first call after the restart finds a dead connection
            if not (await limiter.acquire([OPEN_RPH], [1], "back")).degraded:
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the limiter did not go back to Redis")
        # Decided by Redis again: the counter lives there, and its count starts afresh.
        assert await client.exists("t:key:a:rph") == 1
        decision = await limiter.acquire([OPEN_RPH], [1], "again")
        assert (decision.admitted, decision.degraded) == (True, False)
        assert decision.states[0].remaining == pytest.approx(1, abs=0.01)
    finally:
        await client.aclose()
        await limiter.close()


async def test_a_frozen_redis_costs_one_timeout_not_a_hang(private_redis: PrivateRedis) -> None:
    # A timeout long enough that "waited for it" and "did not wait" stay apart even
    # on a loaded machine, and a recheck interval that outlasts the test.
    limiter = RedisLimiter(private_redis.url, namespace="t:", timeout_s=0.4, recheck_after_s=30.0)
    assert private_redis.process is not None
    try:
        await limiter.acquire([OPEN_RPH], [0], "warm")
        private_redis.process.send_signal(signal.SIGSTOP)
        elapsed_s, admitted, degraded, _ = await _timed_acquire(limiter, [OPEN_RPH], "r1")
        assert (admitted, degraded) == (True, True)
        assert 0.35 < elapsed_s < PROMPT_S  # it did wait for Redis, up to the timeout
        # Within recheck_after_s, decisions do not wait for a backend known to be failing.
        elapsed_s, admitted, degraded, _ = await _timed_acquire(limiter, [OPEN_RPH], "r2")
        assert (admitted, degraded) == (True, True)
        assert elapsed_s < 0.2
        started = time.monotonic()
        await limiter.settle([OPEN_RPH, OPEN_CONC], [1, 1], [1, 1], "other")
        assert time.monotonic() - started < PROMPT_S
    finally:
        private_redis.process.send_signal(signal.SIGCONT)
        await limiter.close()


async def test_degraded_requests_settle_locally(private_redis: PrivateRedis) -> None:
    limiter = RedisLimiter(private_redis.url, namespace="t:", recheck_after_s=60)
    try:
        await private_redis.kill()
        first = await limiter.acquire([OPEN_CONC], [1], "a")
        assert (first.admitted, first.degraded) == (True, True)
        assert not (await limiter.acquire([OPEN_CONC], [1], "b")).admitted
        await limiter.settle([OPEN_CONC], [1], [1], "a")
        third = await limiter.acquire([OPEN_CONC], [1], "c")
        assert (third.admitted, third.degraded) == (True, True)
    finally:
        await limiter.close()


async def test_leases_left_in_redis_by_an_outage_are_released_when_it_answers(
    private_redis: PrivateRedis,
) -> None:
    """A frozen Redis runs the commands it received once it resumes, after the client gave up:
    an acquire judged locally may still take its lease in Redis, and a release may be lost.
    Both are released with the next settle that reaches Redis, not a lease TTL later."""
    limiter = RedisLimiter(private_redis.url, namespace="t:", timeout_s=0.2, recheck_after_s=0.05)
    conc = Limit("key:a:concurrency", LimitKind.CONCURRENCY, 5)
    other = Limit("key:b:concurrency", LimitKind.CONCURRENCY, 5)
    client = private_redis.client()
    assert private_redis.process is not None
    try:
        assert not (await limiter.acquire([conc], [1], "a")).degraded
        # Connected, script loaded: the commands below are sent, then lost to the freeze.
        await asyncio.gather(*(limiter.settle([other], [1], [1], f"w{i}") for i in range(2)))
        private_redis.process.send_signal(signal.SIGSTOP)
        lost = await limiter.acquire([conc], [1], "b")  # its answer is lost
        assert (lost.admitted, lost.degraded) == (True, True)
        await asyncio.sleep(0.06)
        await limiter.settle([conc], [1], [1], "a")  # lost too
        private_redis.process.send_signal(signal.SIGCONT)
        await asyncio.sleep(0.1)
        left_over = await client.zrange("t:key:a:concurrency", 0, -1)
        assert set(left_over) <= {b"a", b"b"}

        assert not (await limiter.acquire([other], [1], "c")).degraded
        await limiter.settle([other], [1], [1], "c")  # carries the releases along
        assert await client.zcard("t:key:a:concurrency") == 0
        await limiter.settle([conc], [1], [1], "b")  # b settles locally, where it was charged
        assert (await limiter.acquire([conc], [1], "d")).states[0].remaining == 4
    finally:
        private_redis.process.send_signal(signal.SIGCONT)
        await client.aclose()
        await limiter.close()


async def test_failures_are_counted_and_logged_at_a_limited_rate(
    private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture
) -> None:
    limiter = RedisLimiter(private_redis.url, namespace="t:", recheck_after_s=0)
    try:
        await private_redis.kill()
        with caplog.at_level(logging.WARNING, logger="lockgate.admission"):
            for index in range(20):
                await limiter.acquire([OPEN_RPH], [1], f"r{index}")
        assert limiter.backend_failures == 20
        assert len(caplog.records) == 1
        assert "Redis failed on acquire" in caplog.records[0].getMessage()
    finally:
        await limiter.close()
