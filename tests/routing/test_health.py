"""Health end to end: ejection and recovery, breaker transitions, active checks, all down.

A replica is "killed" by closing its simulator (connections refused) and
"restarted" by starting a new simulator on the same port.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

from lockgate.routing.health import BreakerState
from lockgate.sim import SimConfig, SimServer
from tests.routing.fleet import (
    FAST,
    chat,
    closed_port,
    members,
    model,
    replicas,
    served_by,
    sim_config,
    spec,
)
from tests.support import RunningGateway, running_gateway


async def eventually(condition: Callable[[], bool], timeout_s: float = 3.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def until_served(gw: RunningGateway, condition: Callable[[], bool], limit: int = 60) -> int:
    """Send requests (all must succeed) until ``condition``; returns how many it took."""
    for sent in range(1, limit + 1):
        served_by(await chat(gw.port, "chat"))
        if condition():
            return sent
    raise AssertionError(f"condition not reached after {limit} requests")


def restart(port: int, config: SimConfig = FAST) -> SimServer:
    return SimServer(config, host="127.0.0.1", port=port)


async def test_a_dead_replica_is_ejected_then_readmitted_after_the_back_off() -> None:
    routing = {
        "strategy": "weighted_random",
        "outlier": {"consecutive_failures": 2, "base_ejection_s": 0.5},
        "breaker": {"enabled": False},
    }
    async with replicas(FAST, FAST) as (good, doomed):
        port = doomed.port
        async with running_gateway(spec([model("chat", [good, doomed], routing=routing)])) as gw:
            state = members(gw, "chat")["chat-r1"]
            await doomed.close()
            # Requests that try the dead one are retried on the good one: nobody notices.
            await until_served(gw, lambda: state.outlier.ejections == 1)
            ejected_at = time.monotonic()
            async with restart(port) as revived:
                # Back up, but still ejected: no traffic until the back-off has passed.
                while time.monotonic() - ejected_at < 0.3:
                    assert served_by(await chat(gw.port, "chat")) == "chat-r0"
                assert revived.engine.requests_total == 0
                await asyncio.sleep(0.3)
                await until_served(gw, lambda: revived.engine.requests_total > 0)
                assert not state.outlier.is_on_probation  # its first answer cleared it
                assert state.outlier.ejections == 1


async def test_repeat_ejections_last_longer() -> None:
    routing = {
        "strategy": "weighted_random",
        "outlier": {"consecutive_failures": 1, "base_ejection_s": 0.2},
        "breaker": {"enabled": False},
    }
    async with replicas(FAST) as (good,):
        dead = closed_port()
        async with running_gateway(spec([model("chat", [good, dead], routing=routing)])) as gw:
            state = members(gw, "chat")["chat-r1"]
            lengths = []
            for ejections in (1, 2, 3):
                await until_served(gw, lambda n=ejections: state.outlier.ejections == n)
                lengths.append(
                    round(state.outlier.ejected_until - asyncio.get_running_loop().time(), 1)
                )
                await asyncio.sleep(state.outlier.ejected_until - asyncio.get_running_loop().time())
    assert lengths == [0.2, 0.4, 0.8]


async def test_breaker_opens_half_opens_with_one_probe_and_closes() -> None:
    routing = {
        "outlier": {"enabled": False},
        "breaker": {"window": 4, "min_calls": 4, "failure_ratio": 0.5, "open_s": 0.3},
    }
    broken = sim_config(fault_rates={"error-500": 1.0})
    async with replicas(FAST, broken) as (good, bad):
        port = bad.port
        async with running_gateway(spec([model("chat", [good, bad], routing=routing)])) as gw:
            breaker = members(gw, "chat")["chat-r1"].breaker
            assert breaker is not None
            await until_served(gw, lambda: breaker.state is BreakerState.OPEN)
            seen = bad.engine.requests_total
            for _ in range(10):
                assert served_by(await chat(gw.port, "chat")) == "chat-r0"
            assert bad.engine.requests_total == seen  # open: nothing sent
            # After open_s the next request that picks it is the probe; it fails: open again.
            await asyncio.sleep(0.35)
            await until_served(gw, lambda: bad.engine.requests_total == seen + 1)
            assert breaker.state is BreakerState.OPEN
            # Replace it with a healthy (slow) replica: exactly one probe, then closed.
            await bad.close()
            async with restart(port, sim_config(ttft_ms=300, tokens_per_s=1000)) as fixed:
                await asyncio.sleep(0.35)
                answers = await asyncio.gather(*(chat(gw.port, "chat") for _ in range(10)))
                assert all(a.status == 200 for a in answers)
                assert fixed.engine.requests_total == 1, "half-open lets a single probe through"
                assert breaker.state is BreakerState.CLOSED
                await until_served(gw, lambda: fixed.engine.requests_total > 1)


async def test_active_checks_take_a_replica_out_before_any_request_fails() -> None:
    routing = {
        "strategy": "weighted_random",
        "outlier": {"consecutive_failures": 1},
        "health_check": {
            "path": "/health",
            "interval_s": 0.05,
            "timeout_s": 0.5,
            "unhealthy_threshold": 1,
            "healthy_threshold": 2,
        },
    }
    async with replicas(FAST, FAST) as (good, other):
        port = other.port
        async with running_gateway(spec([model("chat", [good, other], routing=routing)])) as gw:
            state = members(gw, "chat")["chat-r1"]
            await other.close()
            await eventually(lambda: not state.is_up)
            for _ in range(20):
                assert served_by(await chat(gw.port, "chat")) == "chat-r0"
            assert state.outlier.ejections == 0, "no request was sent to the dead replica"
            async with restart(port) as revived:
                await eventually(lambda: state.is_up)
                await until_served(gw, lambda: revived.engine.requests_total > 0)
            checker = gw.gateway.dataplane.router.checker
            assert checker is not None
            assert checker.is_running
        # The gateway stopped: its probing task (and every probe under it) ends with it.
        await eventually(lambda: not checker.is_running, timeout_s=0.5)


async def test_when_every_replica_is_down_the_answer_is_a_fast_503() -> None:
    routing = {"outlier": {"consecutive_failures": 1, "base_ejection_s": 30}}
    dead = [closed_port(), closed_port()]
    async with running_gateway(spec([model("chat", list(dead), routing=routing)])) as gw:
        first = await chat(gw.port, "chat")
        assert first.status == 502  # both tried, both refused: the upstream's own error
        assert first.headers["x-lockgate-error-code"] == "upstream_unavailable"
        for stream in (False, True):
            started = time.monotonic()
            answer = await chat(gw.port, "chat", stream=stream)
            assert time.monotonic() - started < 0.2, "never hang on dead replicas"
            assert answer.status == 503
            assert answer.headers["x-lockgate-error-code"] == "no_healthy_deployment"
            assert answer.headers["x-lockgate-error-source"] == "upstream"
            assert 28 <= int(answer.headers["retry-after"]) <= 30
            error = json.loads(answer.body)["error"]
            assert error["code"] == "no_healthy_deployment"
            assert "chat" in error["message"]


async def test_active_checks_alone_give_a_fast_503_before_any_traffic() -> None:
    routing = {"health_check": {"interval_s": 0.05, "unhealthy_threshold": 1}}
    async with (
        replicas(FAST) as (only,),
        running_gateway(spec([model("chat", [only], routing=routing)])) as gw,
    ):
        state = members(gw, "chat")["chat-r0"]
        await only.close()
        await eventually(lambda: not state.is_up)
        started = time.monotonic()
        answer = await chat(gw.port, "chat")
        assert time.monotonic() - started < 0.2
        assert answer.status == 503
        assert answer.headers["x-lockgate-error-code"] == "no_healthy_deployment"
