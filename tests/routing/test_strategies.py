"""Each strategy's choice, end to end: real HTTP, several simulators as replicas."""

from __future__ import annotations

import asyncio
import collections
import json
import math

from lockgate.sim import SimServer
from tests.routing.fleet import (
    FAST,
    chat,
    model,
    replicas,
    served_by,
    sim_config,
    spec,
)
from tests.support import RawResponse, running_gateway

SLOW = sim_config(ttft_ms=300, tokens_per_s=1000)


async def spread(port: int, model_name: str, total: int, concurrency: int) -> list[RawResponse]:
    """``total`` requests from ``concurrency`` clients, each sending one after the other."""

    async def client(count: int) -> list[RawResponse]:
        return [await chat(port, model_name) for _ in range(count)]

    batches = await asyncio.gather(*(client(total // concurrency) for _ in range(concurrency)))
    return [r for batch in batches for r in batch]


async def test_weighted_random_splits_1_to_3() -> None:
    async with replicas(FAST, FAST) as sims:
        m = model("chat", list(sims), routing={"strategy": "weighted_random"}, weight=[1, 3])
        async with running_gateway(spec([m])) as gw:
            answers = await spread(gw.port, "chat", 400, 8)
    seen = collections.Counter(served_by(a) for a in answers)
    # Binomial(400, 0.25): mean 100, sd 8.7; the tolerance is over 4 sd.
    assert 60 <= seen["chat-r0"] <= 140, seen
    assert seen["chat-r0"] + seen["chat-r1"] == 400
    assert sims[0].engine.requests_total == seen["chat-r0"]


async def test_least_outstanding_avoids_a_slow_replica() -> None:
    async with replicas(SLOW, FAST) as (slow, fast):
        m = model("chat", [slow, fast])  # the default strategy
        async with running_gateway(spec([m])) as gw:
            answers = await spread(gw.port, "chat", 40, 4)
    seen = collections.Counter(served_by(a) for a in answers)
    # Round robin would send it 20. Requests pile up there, so it is mostly skipped; it
    # still gets one whenever it is idle and the fast one is not (typically 6 to 8).
    assert seen["chat-r0"] <= 12, seen
    assert slow.engine.requests_total == seen["chat-r0"]


async def test_power_of_two_follows_capacity() -> None:
    async with replicas(SLOW, SLOW) as sims:
        m = model("chat", list(sims), routing={"strategy": "power_of_two"}, capacity=[1, 3])
        async with running_gateway(spec([m])) as gw:
            answers = await asyncio.gather(*(chat(gw.port, "chat") for _ in range(12)))
    seen = collections.Counter(served_by(a) for a in answers)
    assert seen["chat-r1"] >= 8, seen  # load = outstanding / capacity stays level: 3:9


async def test_latency_aware_prefers_the_replica_with_the_faster_first_token() -> None:
    async with replicas(sim_config(ttft_ms=60), sim_config(ttft_ms=1)) as sims:
        m = model("chat", list(sims), routing={"strategy": "latency"})
        async with running_gateway(spec([m])) as gw:
            answers = [await chat(gw.port, "chat", stream=True) for _ in range(30)]
    seen = collections.Counter(served_by(a) for a in answers)
    # Each is measured once (an unmeasured replica is tried before a known one is
    # repeated), then the slow one is left alone. Slack for a cold first measurement.
    assert seen["chat-r0"] <= 3, seen
    assert seen["chat-r0"] >= 1, seen


# -- cache affinity ----------------------------------------------------------------------
SYSTEM = "You are a meticulous assistant for the {} team. " + "Follow the house style. " * 30


def with_system(team: str, question: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": SYSTEM.format(team)},
        {"role": "user", "content": question},
    ]


async def test_affinity_keeps_a_prefix_on_one_replica_and_spreads_different_ones() -> None:
    async with replicas(FAST, FAST, FAST) as sims:
        m = model("chat", list(sims), routing={"strategy": "cache_affinity"})
        async with running_gateway(spec([m])) as gw:
            same = [
                await chat(gw.port, "chat", messages=with_system("billing", f"Question {i}?"))
                for i in range(30)
            ]
            assert len({served_by(a) for a in same}) == 1
            homes = {}
            for team in range(60):
                answer = await chat(gw.port, "chat", messages=with_system(f"t{team}", "Hi?"))
                homes[team] = served_by(answer)
            spread_count = collections.Counter(homes.values())
            assert set(spread_count) == {"chat-r0", "chat-r1", "chat-r2"}
            assert min(spread_count.values()) >= 6, spread_count
            # And the same prefixes go to the same places the second time round.
            for team in range(0, 60, 6):
                answer = await chat(gw.port, "chat", messages=with_system(f"t{team}", "Again?"))
                assert served_by(answer) == homes[team]


async def test_affinity_follows_the_session_header_over_the_prompt() -> None:
    async with replicas(FAST, FAST, FAST) as sims:
        m = model("chat", list(sims), routing={"strategy": "cache_affinity"})
        async with running_gateway(spec([m])) as gw:
            answers = [
                await chat(gw.port, "chat", f"Topic {i}", headers={"x-session-id": "conv-42"})
                for i in range(20)
            ]
    assert len({served_by(a) for a in answers}) == 1


async def test_affinity_bounds_the_load_of_a_hot_prefix() -> None:
    async with replicas(SLOW, SLOW, SLOW) as sims:
        m = model(
            "chat",
            list(sims),
            routing={"strategy": "cache_affinity", "affinity": {"load_factor": 0.25}},
        )
        async with running_gateway(spec([m])) as gw:
            hot = with_system("hot", "Same question")
            answers = await asyncio.gather(
                *(chat(gw.port, "chat", messages=hot) for _ in range(30))
            )
    seen = collections.Counter(served_by(a) for a in answers)
    assert max(seen.values()) <= math.ceil(1.25 * 30 / 3), seen  # (1 + ε) * average
    assert len(seen) >= 2, "a hot prefix spills over instead of melting its replica"


async def cached_answers(sims: list[SimServer], strategy: str) -> int:
    """Requests answered with a prefix-cache hit: 6 system prompts x 5 questions, interleaved."""
    for sim in sims:
        sim.engine.cache.clear()
    m = model("chat", list(sims), routing={"strategy": strategy})
    hits = 0
    async with running_gateway(spec([m])) as gw:
        for question in range(5):
            for team in range(6):
                messages = with_system(f"team {team}", f"Question {question}?")
                answer = await chat(gw.port, "chat", messages=messages)
                usage = json.loads(answer.body)["usage"]
                hits += usage["prompt_tokens_details"]["cached_tokens"] > 0
    return hits


async def test_affinity_reuses_the_engines_prefix_cache() -> None:
    async with replicas(FAST, FAST, FAST) as sims:
        affinity = await cached_answers(sims, "cache_affinity")
        spread_out = await cached_answers(sims, "least_outstanding")
    assert affinity == 24  # every prompt misses once, then always hits
    assert spread_out < affinity
