"""Routing benchmarks: cache affinity's TTFT gain, and what routing costs per request.

    .venv/bin/python -m bench.routing                 # both
    .venv/bin/python -m bench.routing --only affinity --sessions 16 --turns 6
    .venv/bin/python -m bench.routing --only cost

**affinity**: several simulator replicas with a prefix cache (vLLM-like: an uncached
prompt token costs ``prefill_ms_per_token``; the cache holds a few conversations per
replica), and chat sessions that each have their own long system prompt and grow
turn by turn. The same traffic runs through the gateway twice: once spread
(``least_outstanding``: ties at random, i.e. round robin under even load) and once
with ``cache_affinity`` (keyed on the ``x-session-id`` header). TTFT is measured by
the client, from sending to the first streamed event. Printed: p50/p99 both ways,
their ratio, and the replicas' prefix-cache hit rates.

**cost**: the routing work of one request in-process (choose a deployment, lease it,
end the lease, count it in the retry budget; cache affinity also reads and hashes a
512-byte prompt prefix), per strategy, for 3 and 8 deployments, best of 7 runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from contextlib import AsyncExitStack
from typing import Any

from lockgate.config import GatewaySpec, resolve
from lockgate.routing.member import Outcome
from lockgate.routing.pool import build_plans
from lockgate.serve import Gateway
from lockgate.sim import SimConfig, SimServer

STRATEGIES = ("least_outstanding", "weighted_random", "power_of_two", "latency", "cache_affinity")


# -- affinity ------------------------------------------------------------------------------
def _replica_config(seed: int) -> SimConfig:
    return SimConfig(
        ttft_ms=5,
        prefill_ms_per_token=0.4,  # ~240 ms for an uncached 600-token system prompt
        tokens_per_s=2000,
        output_tokens=8,
        block_size=16,
        kv_cache_tokens=6_000,  # a handful of conversations per replica, not all of them
        capacity=64,
        seed=seed,
    )


def _system_prompt(session: int) -> str:
    rng = random.Random(session)
    words = [f"w{rng.randrange(10_000)}" for _ in range(600)]
    return f"You are assistant number {session}. " + " ".join(words)


async def _first_event_s(port: int, body: bytes, session: int) -> float:
    """Send one streamed chat request; seconds until its first event (then drain it)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        started = time.perf_counter()
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: bench\r\nconnection: close\r\n"
            b"content-type: application/json\r\nx-session-id: s%d\r\ncontent-length: %d\r\n\r\n%s"
            % (session, len(body), body)
        )
        ttft = None
        buffer = b""
        while chunk := await reader.read(65536):
            buffer += chunk
            if ttft is None and b"data: " in buffer:
                ttft = time.perf_counter() - started
        if ttft is None or b"[DONE]" not in buffer:
            raise RuntimeError(f"a broken answer: {buffer[:300]!r}")
        return ttft
    finally:
        writer.close()


async def _session(port: int, session: int, turns: int, ttfts: list[float]) -> None:
    messages: list[dict[str, str]] = [{"role": "system", "content": _system_prompt(session)}]
    for turn in range(turns):
        messages.append({"role": "user", "content": f"Question {turn} of session {session}?"})
        body = json.dumps({"model": "chat", "messages": messages, "stream": True}).encode()
        ttfts.append(await _first_event_s(port, body, session))
        messages.append({"role": "assistant", "content": f"Answer {turn}."})


def _gateway_spec(ports: list[int], strategy: str) -> GatewaySpec:
    return GatewaySpec.model_validate(
        {
            "server": {"port": 0},
            "admission": {"enabled": False},
            "metering": {"enabled": False},
            "observability": {"access_log": None},
            "models": [
                {
                    "name": "chat",
                    "routing": {"strategy": strategy, "affinity": {"sources": ["header"]}},
                    "deployments": [
                        {"name": f"r{i}", "base_url": f"http://127.0.0.1:{p}/v1"}
                        for i, p in enumerate(ports)
                    ],
                }
            ],
        }
    )


async def _affinity_run(strategy: str, replicas: int, sessions: int, turns: int) -> dict[str, Any]:
    async with AsyncExitStack() as stack:
        sims = [
            await stack.enter_async_context(SimServer(_replica_config(0), host="127.0.0.1"))
            for _ in range(replicas)
        ]
        gateway = Gateway(resolve(_gateway_spec([s.port for s in sims], strategy)))
        port = await gateway.start()
        try:
            ttfts: list[float] = []
            await asyncio.gather(*(_session(port, s, turns, ttfts) for s in range(sessions)))
        finally:
            await gateway.stop(drain_timeout_s=1.0)
        queried = sum(s.engine.prefix_cache_queries for s in sims)
        hits = sum(s.engine.prefix_cache_hits for s in sims)
    ttfts.sort()
    return {
        "strategy": strategy,
        "requests": len(ttfts),
        "p50_ms": statistics.median(ttfts) * 1000,
        "p99_ms": ttfts[min(len(ttfts) - 1, round(0.99 * len(ttfts)) - 1)] * 1000,
        "cache_hit_rate": hits / queried if queried else 0.0,
    }


async def affinity(replicas: int, sessions: int, turns: int) -> list[dict[str, Any]]:
    results = [
        await _affinity_run(strategy, replicas, sessions, turns)
        for strategy in ("least_outstanding", "cache_affinity")
    ]
    spread, sticky = results
    print(
        f"\ncache affinity vs spread: {replicas} replicas, {sessions} sessions x {turns} turns "
        "(600-token system prompt per session)"
    )
    print(f"{'strategy':<20}{'TTFT p50 ms':>14}{'TTFT p99 ms':>14}{'prefix hits':>14}")
    for row in results:
        print(
            f"{row['strategy']:<20}{row['p50_ms']:>14.1f}{row['p99_ms']:>14.1f}"
            f"{row['cache_hit_rate']:>13.0%}"
        )
    print(
        f"affinity / spread: p50 x{sticky['p50_ms'] / spread['p50_ms']:.2f}, "
        f"p99 x{sticky['p99_ms'] / spread['p99_ms']:.2f}"
    )
    return results


# -- cost ----------------------------------------------------------------------------------
def _cost_plan(strategy: str, deployments: int) -> Any:
    spec = GatewaySpec.model_validate(
        {
            "models": [
                {
                    "name": "m",
                    "routing": {"strategy": strategy},
                    "deployments": [
                        {"name": f"d{i}", "base_url": f"http://127.0.0.1:{9000 + i}/v1"}
                        for i in range(deployments)
                    ],
                }
            ]
        }
    )
    config = resolve(spec)
    return build_plans(config.models, config.routing.retry_budget)["m"]


def _cost_us(strategy: str, deployments: int, rounds: int = 20_000) -> float:
    plan = _cost_plan(strategy, deployments)
    body = {
        "messages": [{"role": "system", "content": "x" * 600}, {"role": "user", "content": "hi"}]
    }
    headers: dict[bytes, bytes] = {}
    best = float("inf")
    for _ in range(7):
        started = time.perf_counter()
        for i in range(rounds):
            now = i * 0.001
            plan.budget.record_request(now)
            pool = plan.pool
            key = pool.key(headers, body) if pool.needs_key else None
            lease = pool.choose(now, key)
            lease.end(Outcome.SUCCESS, now)
        best = min(best, (time.perf_counter() - started) / rounds)
    return best * 1e6


def cost() -> list[dict[str, Any]]:
    print("\nrouting cost per request (in-process, best of 7), microseconds")
    print(f"{'strategy':<20}{'3 deployments':>16}{'8 deployments':>16}")
    rows = []
    for strategy in STRATEGIES:
        row = {"strategy": strategy, "3": _cost_us(strategy, 3), "8": _cost_us(strategy, 8)}
        rows.append(row)
        print(f"{strategy:<20}{row['3']:>16.2f}{row['8']:>16.2f}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.routing", description=__doc__)
    parser.add_argument("--only", choices=("affinity", "cost"))
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--sessions", type=int, default=16)
    parser.add_argument("--turns", type=int, default=5)
    args = parser.parse_args()
    if args.only in (None, "affinity"):
        asyncio.run(affinity(args.replicas, args.sessions, args.turns))
    if args.only in (None, "cost"):
        cost()


if __name__ == "__main__":
    main()
