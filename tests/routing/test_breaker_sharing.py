"""One replica's circuit-breaker open reaches the others through the bus (real Redis).

Two gateways in front of one failing engine, each with its own Redis bus on a
shared channel prefix, as two replicas would be. Only gateway A sees the
failures; B's breaker for the same deployment opens anyway, B then answers at
once without calling the engine, and B's own half-open probe closes it again
once the engine is healthy.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from lockgate.config import GatewaySpec
from lockgate.dataplane.pipeline.route import BalancingRouter
from lockgate.invalidation.redis_bus import RedisBus
from lockgate.routing.breaker_sharing import BreakerSharing
from lockgate.routing.health import BreakerState
from lockgate.sim import SimConfig, SimServer
from tests.support import RunningGateway, gateway_spec, raw_request, running_gateway, sim_model

REDIS_URL = "redis://127.0.0.1:6379/0"
CHAT = b'{"model":"sim-chat","messages":[{"role":"user","content":"hi"}],"max_tokens":2}'
FAIL = {"x-sim-fault": "error-500"}


@asynccontextmanager
async def replica(
    spec: GatewaySpec, prefix: str
) -> AsyncIterator[tuple[RunningGateway, BreakerSharing]]:
    bus = RedisBus(REDIS_URL, prefix)
    await bus.start()
    try:
        async with running_gateway(spec) as gw:
            router = gw.gateway.dataplane.router
            assert isinstance(router, BalancingRouter)
            loop = asyncio.get_running_loop()
            sharing = BreakerSharing(bus, router.pool_of, loop.time)
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


async def test_a_malformed_or_expired_message_changes_nothing() -> None:
    prefix = f"test-breakers-{secrets.token_hex(4)}:"
    async with SimServer(SimConfig(ttft_ms=1, output_tokens=2), host="127.0.0.1", port=0) as sim:
        spec = gateway_spec([sim_model("sim-chat", sim.base_url)])
        async with replica(spec, prefix) as (gw, sharing):
            publisher = RedisBus(REDIS_URL, prefix)
            await publisher.start()
            try:
                for key in ("garbage", "sim-chat|sim-chat-d1|yesterday", "sim-chat|sim-chat-d1|1"):
                    await publisher.publish("routing.breakers", key)
                await publisher.publish("routing.breakers", "no-such-model|d|99999999999")
                await asyncio.sleep(0.3)
            finally:
                await publisher.close()
            assert breaker_state(gw) is BreakerState.CLOSED
            assert sharing.applied == 0
