"""``RedisLimiter`` batching: the calls of one event-loop turn share one script call.

What must hold whatever the batching: each decision is all-or-nothing, decisions
stay exact across limiters and processes, a failure gives every call of its
batch the fail-open/fail-closed answer, and a caller cancelled while it waits
breaks nobody else's answer. Counting script calls needs a Redis of the test's
own (``INFO commandstats`` is server-wide), so those tests use ``private_redis``.
"""

from __future__ import annotations

import asyncio
import signal
import time

import pytest
from redis.asyncio import Redis

from lockgate.admission.limiter import Decision, Limit, LimitKind
from lockgate.admission.redis_limiter import RedisLimiter
from tests.admission.conftest import PATIENT_TIMEOUT_S, PrivateRedis

HOUR = 3600.0
# Well within: a bound on hanging, not a performance test.
PROMPT_S = 1.0


async def _script_calls(client: Redis) -> int:
    stats = await client.info("commandstats")
    return sum(
        int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("evalsha", "eval")
    )


async def test_one_turn_of_decisions_is_one_script_call_and_each_is_all_or_nothing(
    private_redis: PrivateRedis,
) -> None:
    limiter = RedisLimiter(private_redis.url, namespace="t:", timeout_s=PATIENT_TIMEOUT_S)
    client = private_redis.client()
    rph = Limit("key:a:rph", LimitKind.REQUESTS, 50, HOUR)
    tph = Limit("project:p:tph", LimitKind.TOKENS, 100, HOUR)
    conc = Limit("key:a:concurrency", LimitKind.CONCURRENCY, 10)
    try:
        await limiter.acquire([rph], [0], "warm")  # connected, script loaded
        before = await _script_calls(client)
        decisions = await asyncio.gather(
            *(limiter.acquire([rph, tph, conc], [1, 30, 1], f"r{i}") for i in range(20))
        )
        assert await _script_calls(client) - before == 1
        assert not any(decision.degraded for decision in decisions)
        # Tokens allow three; the order of the calls is the order of the decisions.
        assert [decision.admitted for decision in decisions] == [True] * 3 + [False] * 17
        assert {decision.denied_by for decision in decisions[3:]} == {tph}
        # The refused ones charged nothing: 3 requests, 90 tokens, 3 leases.
        after = await limiter.acquire([rph, tph, conc], [0, 0, 1], "check")
        assert [round(state.remaining, 2) for state in after.states] == [47, 10, 6]
        assert await client.zcard("t:key:a:concurrency") == 4
    finally:
        await client.aclose()
        await limiter.close()


async def test_settlements_join_the_batch_ahead_of_later_decisions(
    private_redis: PrivateRedis,
) -> None:
    limiter = RedisLimiter(private_redis.url, namespace="t:", timeout_s=PATIENT_TIMEOUT_S)
    client = private_redis.client()
    conc = Limit("key:a:concurrency", LimitKind.CONCURRENCY, 1)
    tph = Limit("project:p:tph", LimitKind.TOKENS, 100, HOUR)
    try:
        assert (await limiter.acquire([conc, tph], [1, 100], "a")).admitted
        before = await _script_calls(client)
        # Asked in one turn, settle first: the slot and 60 tokens are back for "b".
        _, decision = await asyncio.gather(
            limiter.settle([conc, tph], [1, 100], [1, 40], "a"),
            limiter.acquire([conc, tph], [1, 60], "b"),
        )
        assert await _script_calls(client) - before == 1
        assert (decision.admitted, decision.degraded) == (True, False)
        assert decision.states[1].remaining == pytest.approx(0, abs=0.01)
        assert await client.zrange("t:key:a:concurrency", 0, -1) == [b"b"]
    finally:
        await client.aclose()
        await limiter.close()


async def test_settlements_alone_are_sent_after_a_short_delay(
    private_redis: PrivateRedis,
) -> None:
    limiter = RedisLimiter(
        private_redis.url, namespace="t:", timeout_s=PATIENT_TIMEOUT_S, settle_delay_s=0.05
    )
    client = private_redis.client()
    conc = Limit("key:a:concurrency", LimitKind.CONCURRENCY, 100)
    try:
        await asyncio.gather(*(limiter.acquire([conc], [1], f"r{i}") for i in range(30)))
        before = await _script_calls(client)
        await asyncio.gather(*(limiter.settle([conc], [1], [1], f"r{i}") for i in range(30)))
        assert await _script_calls(client) - before == 1
        assert await client.zcard("t:key:a:concurrency") == 0
    finally:
        await client.aclose()
        await limiter.close()


async def test_a_full_batch_is_sent_and_the_next_one_started(private_redis: PrivateRedis) -> None:
    limiter = RedisLimiter(
        private_redis.url, namespace="t:", timeout_s=PATIENT_TIMEOUT_S, max_batch=4
    )
    client = private_redis.client()
    rph = Limit("key:a:rph", LimitKind.REQUESTS, 7, HOUR)
    try:
        await limiter.acquire([rph], [0], "warm")
        before = await _script_calls(client)
        decisions = await asyncio.gather(*(limiter.acquire([rph], [1], f"r{i}") for i in range(10)))
        assert await _script_calls(client) - before == 3
        assert [decision.admitted for decision in decisions] == [True] * 7 + [False] * 3
    finally:
        await client.aclose()
        await limiter.close()


async def test_batches_of_several_limiters_stay_exact_and_all_or_nothing(
    redis_url: str, namespace: str
) -> None:
    replicas = [
        RedisLimiter(redis_url, namespace=namespace, timeout_s=PATIENT_TIMEOUT_S) for _ in range(4)
    ]
    rph = Limit("shared:rph", LimitKind.REQUESTS, 50, HOUR)
    conc = Limit("shared:concurrency", LimitKind.CONCURRENCY, 30)
    try:
        decisions = await asyncio.gather(
            *(replicas[i % 4].acquire([conc, rph], [1, 1], f"r{i}") for i in range(200))
        )
        check = await replicas[0].acquire([rph], [0], "check")
    finally:
        for replica in replicas:
            await replica.close()
    assert not any(decision.degraded for decision in decisions)
    assert sum(decision.admitted for decision in decisions) == 30
    # Refused by the concurrency limit, they took no request either.
    assert check.states[0].remaining == pytest.approx(20, abs=0.01)


async def test_a_failing_batch_gives_every_call_in_it_the_fallback_answer(
    redis_url: str, namespace: str
) -> None:
    """A key of the wrong type makes the script fail part-way through its batch."""
    limiter = RedisLimiter(
        redis_url, namespace=namespace, timeout_s=PATIENT_TIMEOUT_S, recheck_after_s=60
    )
    client = Redis.from_url(redis_url)
    good = Limit("key:a:rph", LimitKind.REQUESTS, 100, HOUR, fail_open=True)
    closed = Limit("org:o:rph", LimitKind.REQUESTS, 100, HOUR, fail_open=False)
    broken = Limit("key:b:concurrency", LimitKind.CONCURRENCY, 5, fail_open=True)
    try:
        await client.set(f"{namespace}key:b:concurrency", "not a sorted set")
        calls = [limiter.acquire([good], [1], f"a{i}") for i in range(5)]
        calls.append(limiter.acquire([broken], [1], "b"))
        calls += [limiter.acquire([good], [1], f"c{i}") for i in range(5)]
        calls += [limiter.acquire([good, closed], [1, 1], f"d{i}") for i in range(5)]
        tpm = Limit("key:a:tpm", LimitKind.TOKENS, 1000, 60.0)
        # With a settlement that has a correction to send, in the same batch.
        decisions, _ = await asyncio.gather(
            asyncio.gather(*calls), limiter.settle([tpm], [10], [20], "earlier")
        )
        answers = {(d.admitted, d.degraded, d.unavailable) for d in decisions[:11]}
        assert answers == {(True, True, False)}
        assert {(d.admitted, d.unavailable) for d in decisions[11:16]} == {(False, True)}
        assert limiter.backend_failures == 17  # every call, the settlement included
    finally:
        await client.aclose()
        await limiter.close()


async def test_a_frozen_redis_fails_a_whole_batch_promptly(private_redis: PrivateRedis) -> None:
    limiter = RedisLimiter(private_redis.url, namespace="t:", timeout_s=0.1, recheck_after_s=60)
    open_rph = Limit("key:a:rph", LimitKind.REQUESTS, 100, HOUR, fail_open=True)
    closed_rph = Limit("org:o:rph", LimitKind.REQUESTS, 100, HOUR, fail_open=False)
    assert private_redis.process is not None
    try:
        assert not (await limiter.acquire([open_rph], [0], "warm")).degraded
        private_redis.process.send_signal(signal.SIGSTOP)
        started = time.monotonic()
        decisions = await asyncio.gather(
            *(limiter.acquire([open_rph], [1], f"open{i}") for i in range(25)),
            *(limiter.acquire([open_rph, closed_rph], [1, 1], f"closed{i}") for i in range(25)),
        )
        assert time.monotonic() - started < PROMPT_S
        assert {(d.admitted, d.degraded) for d in decisions[:25]} == {(True, True)}
        assert {(d.admitted, d.unavailable) for d in decisions[25:]} == {(False, True)}
    finally:
        private_redis.process.send_signal(signal.SIGCONT)
        await limiter.close()


async def test_a_dead_redis_fails_a_whole_batch_promptly(private_redis: PrivateRedis) -> None:
    limiter = RedisLimiter(private_redis.url, namespace="t:", recheck_after_s=0)
    rph = Limit("key:a:rph", LimitKind.REQUESTS, 3, HOUR, fail_open=True)
    try:
        assert not (await limiter.acquire([rph], [0], "warm")).degraded
        await private_redis.kill()
        started = time.monotonic()
        decisions = await asyncio.gather(*(limiter.acquire([rph], [1], f"r{i}") for i in range(50)))
        assert time.monotonic() - started < PROMPT_S
        assert all(decision.degraded for decision in decisions)
        # Judged locally, still in order: three per hour.
        assert [decision.admitted for decision in decisions] == [True] * 3 + [False] * 47
    finally:
        await limiter.close()


async def test_a_cancelled_caller_breaks_no_other_answer_and_leaks_no_lease(
    redis_url: str, namespace: str
) -> None:
    limiter = RedisLimiter(redis_url, namespace=namespace, timeout_s=PATIENT_TIMEOUT_S)
    client = Redis.from_url(redis_url)
    conc = Limit("key:a:concurrency", LimitKind.CONCURRENCY, 10)
    key = f"{namespace}key:a:concurrency"
    try:
        await limiter.acquire([conc], [0], "warm")
        await limiter.settle([conc], [0], [0], "warm")
        tasks = [asyncio.create_task(limiter.acquire([conc], [1], f"r{i}")) for i in range(10)]
        await asyncio.sleep(0)  # every call is waiting in the batch now
        tasks[3].cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(results[3], asyncio.CancelledError)
        decisions = [result for index, result in enumerate(results) if index != 3]
        assert all(isinstance(d, Decision) and d.admitted and not d.degraded for d in decisions)
        # The cancelled call was decided too; nobody will settle it, so its lease is
        # released with the next settlement.
        assert await client.zcard(key) == 10
        await limiter.settle([conc], [1], [1], "r0")
        assert sorted(await client.zrange(key, 0, -1)) == sorted(
            f"r{i}".encode() for i in (1, 2, 4, 5, 6, 7, 8, 9)
        )
    finally:
        await client.aclose()
        await limiter.close()


async def test_a_cancelled_caller_of_a_failed_batch_leaks_no_lease(
    private_redis: PrivateRedis,
) -> None:
    """Its batch timed out, but the frozen Redis runs it once it resumes."""
    limiter = RedisLimiter(private_redis.url, namespace="t:", timeout_s=0.2, recheck_after_s=0)
    conc = Limit("key:a:concurrency", LimitKind.CONCURRENCY, 10)
    client = private_redis.client()
    assert private_redis.process is not None
    try:
        assert not (await limiter.acquire([conc], [0], "warm")).degraded
        await limiter.settle([conc], [0], [0], "warm")
        private_redis.process.send_signal(signal.SIGSTOP)
        task = asyncio.create_task(limiter.acquire([conc], [1], "gone"))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.25)  # the batch times out
        private_redis.process.send_signal(signal.SIGCONT)
        await asyncio.sleep(0.1)
        assert await client.zrange("t:key:a:concurrency", 0, -1) in ([b"gone"], [])
        assert not (await limiter.acquire([conc], [1], "next")).degraded
        await limiter.settle([conc], [1], [1], "next")  # carries the release along
        assert await client.zcard("t:key:a:concurrency") == 0
    finally:
        private_redis.process.send_signal(signal.SIGCONT)
        await client.aclose()
        await limiter.close()


async def test_close_sends_what_is_queued(private_redis: PrivateRedis) -> None:
    limiter = RedisLimiter(
        private_redis.url, namespace="t:", timeout_s=PATIENT_TIMEOUT_S, settle_delay_s=60
    )
    client = private_redis.client()
    conc = Limit("key:a:concurrency", LimitKind.CONCURRENCY, 10)
    try:
        assert (await limiter.acquire([conc], [1], "a")).admitted
        settled = asyncio.create_task(limiter.settle([conc], [1], [1], "a"))
        await asyncio.sleep(0)  # queued, waiting for the (long) settle delay
        await limiter.close()
        await settled
        assert await client.zcard("t:key:a:concurrency") == 0
    finally:
        await client.aclose()
        await limiter.close()
