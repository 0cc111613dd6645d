"""Hedged non-streamed requests: a copy to another replica when the first is slow.

A slow simulator is always chosen first; a fast one is the hedge. The first answer
wins, the slow attempt is cancelled (the engine sees the disconnect), leases are
released, and usage is counted once — the winner's.
"""

from __future__ import annotations

import time
from typing import Any

from lockgate.routing.hedge import HedgePolicy, LatencyWindow
from lockgate.routing.spec import HedgeSpec
from tests.routing.fleet import FAST, QUIET, chat, members, model, replicas, sim_config, spec
from tests.support import running_gateway

SLOW = sim_config(ttft_ms=800, output_tokens=4)
WEIGHTS = [1_000_000, 0.001]  # the slow replica is the first choice


def hedged(**hedge: Any) -> dict[str, Any]:
    return {**QUIET, "strategy": "weighted_random", "hedge": hedge}


async def test_the_first_answer_wins_and_the_slow_attempt_is_cancelled() -> None:
    async with replicas(SLOW, FAST) as (slow, fast):
        m = model("chat", [slow, fast], routing=hedged(after_ms=50), weight=WEIGHTS)
        async with running_gateway(spec([m])) as gw:
            started = time.monotonic()
            answers = [await chat(gw.port, "chat") for _ in range(4)]
            elapsed = time.monotonic() - started
            totals = gw.totals
            live = members(gw, "chat")
    assert {a.headers["x-lockgate-deployment"] for a in answers} == {"chat-r1"}
    assert elapsed < 4 * 0.8, "each request answered by the hedge, not after the slow one"
    assert slow.engine.requests_total == 4
    assert fast.engine.requests_total == 4
    assert slow.engine.completed == 0, "every slow attempt was cancelled, none finished"
    # Usage counted once per request: the winner's.
    assert totals.requests == 4
    assert totals.completion_tokens == 4 * FAST.output_tokens
    assert {name: m.outstanding for name, m in live.items()} == {"chat-r0": 0, "chat-r1": 0}


async def test_no_hedge_when_the_first_attempt_is_fast_enough() -> None:
    quick = sim_config(ttft_ms=5, output_tokens=4)
    async with replicas(quick, FAST) as (first, other):
        m = model("chat", [first, other], routing=hedged(after_ms=400), weight=WEIGHTS)
        async with running_gateway(spec([m])) as gw:
            for _ in range(3):
                await chat(gw.port, "chat")
    assert first.engine.completed == 3
    assert other.engine.requests_total == 0


async def test_streams_are_never_hedged() -> None:
    slowish = sim_config(ttft_ms=300, output_tokens=4)
    async with replicas(slowish, FAST) as (first, other):
        m = model("chat", [first, other], routing=hedged(after_ms=20), weight=WEIGHTS)
        async with running_gateway(spec([m])) as gw:
            answer = await chat(gw.port, "chat", stream=True)
    assert answer.headers["x-lockgate-deployment"] == "chat-r0"
    assert other.engine.requests_total == 0


async def test_hedges_spend_the_retry_budget() -> None:
    routing = {"retry_budget": {"ratio": 0, "min_per_s": 0}}
    async with replicas(sim_config(ttft_ms=200, output_tokens=4), FAST) as (first, other):
        m = model("chat", [first, other], routing=hedged(after_ms=20), weight=WEIGHTS)
        async with running_gateway(spec([m], routing)) as gw:
            answer = await chat(gw.port, "chat")
    assert answer.headers["x-lockgate-deployment"] == "chat-r0"
    assert other.engine.requests_total == 0


async def test_a_percentile_delay_is_learned_from_the_models_latencies() -> None:
    async with replicas(SLOW, FAST) as (slow, fast):
        m = model(
            "chat",
            [slow, fast],
            routing=hedged(after_percentile=90, min_samples=3),
            weight=[0.001, 1_000_000],  # learn on the fast one first
        )
        async with running_gateway(spec([m])) as gw:
            for _ in range(3):
                await chat(gw.port, "chat")
            pool = gw.gateway.dataplane.router.plan_for("chat").pool
            pool.members[0].weight, pool.members[1].weight = 1_000_000, 0.001
            started = time.monotonic()
            answer = await chat(gw.port, "chat")
            elapsed = time.monotonic() - started
    assert answer.headers["x-lockgate-deployment"] == "chat-r1"
    assert elapsed < 0.8


def test_latency_window_percentile_and_policy() -> None:
    window = LatencyWindow(95)
    assert window.value() is None
    for ms in range(1, 101):
        window.add(ms / 1000)
    assert window.value() == 0.095
    for _ in range(300):  # the window slides: old samples leave
        window.add(1.0)
    assert window.value() == 1.0
    policy = HedgePolicy(HedgeSpec(after_ms=200, after_percentile=50, min_samples=2))
    assert policy.delay_s() == 0.2  # too few samples: the fixed delay stands in
    policy.record(0.01)
    policy.record(0.03)
    assert policy.delay_s() == 0.01
    assert HedgePolicy(HedgeSpec(after_percentile=50)).delay_s() is None
