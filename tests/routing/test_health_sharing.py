"""One replica's evidence about a deployment reaches the others through the bus (real
Redis): breaker openings, ejections and throttles.

Two gateways in front of one engine, each with its own Redis bus on a shared channel
prefix, as two replicas would be. Only gateway A sees the failures (or the 429);
B acts on them anyway: it answers at once without calling the engine, or prefers
another deployment, and recovers on its own evidence afterwards.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

from lockgate.config import GatewaySpec
from lockgate.dataplane.pipeline.route import BalancingRouter
from lockgate.invalidation.redis_bus import RedisBus
from lockgate.routing.health import BreakerState
from lockgate.routing.health_sharing import HealthSharing
from lockgate.routing.member import Member
from lockgate.sim import SimConfig, SimServer
from tests.support import RunningGateway, gateway_spec, raw_request, running_gateway, sim_model

REDIS_URL = "redis://127.0.0.1:6379/0"
CHAT = b'{"model":"sim-chat","messages":[{"role":"user","content":"hi"}],"max_tokens":2}'
FAIL = {"x-sim-fault": "error-500"}


@asynccontextmanager
async def replica(
    spec: GatewaySpec, prefix: str
) -> AsyncIterator[tuple[RunningGateway, HealthSharing]]:
    bus = RedisBus(REDIS_URL, prefix)
    await bus.start()
    try:
        async with running_gateway(spec) as gw:
            router = gw.gateway.dataplane.router
            assert isinstance(router, BalancingRouter)
            loop = asyncio.get_running_loop()
            sharing = HealthSharing(bus, router.pool_of, loop.time)
            pool = router.pool_of("sim-chat")
            assert pool is not None
            sharing.attach(pool)
            try:
                yield gw, sharing
            finally:
                await sharing.close()
    finally:
        await bus.close()


def breaker_state(gw: RunningGateway) -> BreakerState:
    router = gw.gateway.dataplane.router
    assert isinstance(router, BalancingRouter)
    pool = router.pool_of("sim-chat")
    assert pool is not None
    (member,) = pool.members
    assert member.breaker is not None
    return member.breaker.state


async def test_a_breaker_opened_on_one_replica_opens_on_the_other_and_recovers_there() -> None:
    prefix = f"test-breakers-{secrets.token_hex(4)}:"
    async with SimServer(SimConfig(ttft_ms=1, output_tokens=2), host="127.0.0.1", port=0) as sim:
        model = sim_model("sim-chat", sim.base_url)
        model["routing"] = {
            "retries": {"max_attempts": 1},
            "outlier": {"enabled": False},  # the breaker alone decides
            "breaker": {"window": 4, "min_calls": 2, "failure_ratio": 0.5, "open_s": 0.8},
        }
        spec = gateway_spec([model])
        async with AsyncExitStack() as stack:
            a, sharing_a = await stack.enter_async_context(replica(spec, prefix))
            b, sharing_b = await stack.enter_async_context(replica(spec, prefix))
            for _ in range(2):
                answer = await raw_request(a.port, "POST", "/v1/chat/completions", CHAT, FAIL)
                assert answer.status >= 500
            assert breaker_state(a) is BreakerState.OPEN
            for _ in range(200):  # the message crosses Redis
                if breaker_state(b) is BreakerState.OPEN:
                    break
                await asyncio.sleep(0.01)
            assert breaker_state(b) is BreakerState.OPEN, "B never heard of A's open breaker"
            assert (sharing_a.announced, sharing_b.applied) == (1, 1)
            served = sim.engine.requests_total
            refused = await raw_request(b.port, "POST", "/v1/chat/completions", CHAT)
            assert refused.status == 503
            assert sim.engine.requests_total == served, "B called the engine behind an open breaker"
            # B's own probe, after the shared open period, closes B's breaker.
            await asyncio.sleep(0.9)
            probe = await raw_request(b.port, "POST", "/v1/chat/completions", CHAT)
            assert probe.status == 200
            assert breaker_state(b) is BreakerState.CLOSED
            assert sharing_b.announced == 0, "an open learned from A is not announced again"


def member_of(gw: RunningGateway, name: str = "sim-chat-d1") -> Member:
    router = gw.gateway.dataplane.router
    assert isinstance(router, BalancingRouter)
    pool = router.pool_of("sim-chat")
    assert pool is not None
    return next(m for m in pool.members if m.name == name)


async def until(predicate: Callable[[], bool], what: str) -> None:
    for _ in range(200):  # the message crosses Redis
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(what)


async def test_an_ejection_on_one_replica_ejects_on_the_other_until_the_same_moment() -> None:
    prefix = f"test-health-{secrets.token_hex(4)}:"
    async with SimServer(SimConfig(ttft_ms=1, output_tokens=2), host="127.0.0.1", port=0) as sim:
        model = sim_model("sim-chat", sim.base_url)
        model["routing"] = {
            "retries": {"max_attempts": 1},
            "breaker": {"enabled": False},  # ejection alone decides
            "outlier": {"consecutive_failures": 2, "base_ejection_s": 0.8},
        }
        spec = gateway_spec([model])
        async with AsyncExitStack() as stack:
            a, sharing_a = await stack.enter_async_context(replica(spec, prefix))
            b, sharing_b = await stack.enter_async_context(replica(spec, prefix))
            for _ in range(2):
                answer = await raw_request(a.port, "POST", "/v1/chat/completions", CHAT, FAIL)
                assert answer.status >= 500
            loop = asyncio.get_running_loop()
            assert member_of(a).outlier.ejected_until > loop.time()
            await until(lambda: member_of(b).outlier.ejected_until > loop.time(), "B not ejected")
            gap = member_of(b).outlier.ejected_until - member_of(a).outlier.ejected_until
            assert abs(gap) < 0.1
            assert member_of(b).outlier.ejections_total == 0, "the same ejection, not B's own"
            served = sim.engine.requests_total
            refused = await raw_request(b.port, "POST", "/v1/chat/completions", CHAT)
            assert refused.status == 503
            assert sim.engine.requests_total == served, "B called an ejected deployment"
            await asyncio.sleep(0.9)
            assert (await raw_request(b.port, "POST", "/v1/chat/completions", CHAT)).status == 200
            assert (sharing_a.announced, sharing_b.applied, sharing_b.announced) == (1, 1, 0)


async def test_a_retry_after_seen_by_one_replica_steers_the_other_without_a_storm() -> None:
    prefix = f"test-health-{secrets.token_hex(4)}:"
    async with AsyncExitStack() as stack:
        sims = [
            await stack.enter_async_context(
                SimServer(SimConfig(ttft_ms=1, output_tokens=2), host="127.0.0.1", port=0)
            )
            for _ in range(2)
        ]
        model = sim_model("sim-chat", sims[0].base_url)
        # d2 does not forward the x-sim-* headers: only d1 ever answers 429 here.
        model["deployments"].append({"name": "sim-chat-d2", "base_url": sims[1].base_url})
        model["routing"] = {"retries": {"max_attempts": 1}, "strategy": "weighted_random"}
        spec = gateway_spec([model])
        a, sharing_a = await stack.enter_async_context(replica(spec, prefix))
        b, sharing_b = await stack.enter_async_context(replica(spec, prefix))
        throttled = {"x-sim-fault": "error-429", "x-sim-retry-after": "30"}
        answers = 0
        while member_of(a).throttled_until == 0.0:  # until A lands on d1 and is told 429
            await raw_request(a.port, "POST", "/v1/chat/completions", CHAT, throttled)
            answers += 1
            assert answers < 50
        router = a.gateway.dataplane.router
        assert isinstance(router, BalancingRouter)
        pool = router.pool_of("sim-chat")
        assert pool is not None
        for _ in range(5):  # more 429s from d1 at once: no new message for each
            pool.throttle(member_of(a), 30, asyncio.get_running_loop().time())
        await asyncio.sleep(0.1)
        loop = asyncio.get_running_loop()
        await until(lambda: member_of(b).throttled_until > loop.time() + 20, "B not throttled")
        assert sharing_a.announced == 1
        before = sims[0].engine.requests_total
        for _ in range(20):
            assert (await raw_request(b.port, "POST", "/v1/chat/completions", CHAT)).status == 200
        assert sims[0].engine.requests_total == before, "B kept sending to the throttled one"
        assert sharing_b.announced == 0


async def test_a_malformed_or_expired_message_changes_nothing() -> None:
    prefix = f"test-breakers-{secrets.token_hex(4)}:"
    async with SimServer(SimConfig(ttft_ms=1, output_tokens=2), host="127.0.0.1", port=0) as sim:
        spec = gateway_spec([sim_model("sim-chat", sim.base_url)])
        async with replica(spec, prefix) as (gw, sharing):
            publisher = RedisBus(REDIS_URL, prefix)
            await publisher.start()
            try:
                for key in (
                    "garbage",
                    "sim-chat|sim-chat-d1|yesterday",
                    "sim-chat|sim-chat-d1|1",
                    "eject|sim-chat|sim-chat-d1|1",
                    "melt|sim-chat|sim-chat-d1|99999999999",
                    "a|b|c|d|e",
                ):
                    await publisher.publish("routing.breakers", key)
                await publisher.publish("routing.breakers", "no-such-model|d|99999999999")
                await asyncio.sleep(0.3)
            finally:
                await publisher.close()
            assert breaker_state(gw) is BreakerState.CLOSED
            assert member_of(gw).outlier.ejected_until == 0.0
            assert sharing.applied == 0
