"""Each injected fault, as a client (or a gateway) would experience it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest

from lockgate.sim import SimServer

CHAT = "/v1/chat/completions"
BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
STREAM = {**BODY, "stream": True}


def fault(kind: str, **extra: str) -> dict[str, str]:
    return {"x-sim-fault": kind, **extra}


async def stats(raw: Any, sim: SimServer) -> dict[str, Any]:
    return dict((await raw.get(sim, "/sim/stats")).json())


@pytest.mark.parametrize(("kind", "status"), [("error-500", 500), ("error-503", 503)])
async def test_error_faults(sim: SimServer, raw: Any, kind: str, status: int) -> None:
    r = await raw.post(sim, CHAT, BODY, fault(kind))
    assert r.status == status
    error = r.json()["error"]
    assert error["type"] == "server_error"
    assert set(error) == {"message", "type", "param", "code"}
    s = await stats(raw, sim)
    assert s["failed"] == {kind: 1}
    assert s["completed"] == 0
    assert s["prompt_tokens_total"] == 0  # never reached the engine


async def test_error_429_retry_after(sim: SimServer, raw: Any) -> None:
    r = await raw.post(sim, CHAT, BODY, fault("error-429"))
    assert r.status == 429
    assert (r.headers["retry-after"], r.headers["retry-after-ms"]) == ("2", "2000")
    assert r.json()["error"]["code"] == "rate_limit_exceeded"
    r = await raw.post(sim, CHAT, BODY, fault("error-429", **{"x-sim-retry-after": "0.5"}))
    assert (r.headers["retry-after"], r.headers["retry-after-ms"]) == ("0.5", "500")


async def test_hang_never_answers_until_the_client_leaves(sim: SimServer, raw: Any) -> None:
    r = await raw.post(sim, CHAT, BODY, fault("hang"), wait_s=0.2)
    assert r.timed_out
    assert r.data == b""
    await asyncio.sleep(0.05)
    assert not sim.app.tasks  # the handler was cancelled when we left
    s = await stats(raw, sim)
    assert s["failed"] == {"hang": 1}
    assert s["cancelled"] == 0


async def test_slow_first_token_delays_headers(make_sim: Any, raw: Any) -> None:
    sim = await make_sim(ttft_ms=0, tokens_per_s=0, slow_first_token_ms=150)
    start = time.perf_counter()
    r = await raw.post(sim, CHAT, STREAM, fault("slow-first-token"))
    assert time.perf_counter() - start >= 0.15
    assert r.complete
    assert r.events[-1] == b"[DONE]"
    start = time.perf_counter()
    await raw.post(sim, CHAT, BODY, fault("slow-first-token", **{"x-sim-delay-ms": "60"}))
    assert 0.06 <= time.perf_counter() - start < 0.15


async def test_delay_header_adds_latency(sim: SimServer, raw: Any) -> None:
    start = time.perf_counter()
    r = await raw.post(sim, CHAT, BODY, {"x-sim-delay-ms": "80"})
    assert time.perf_counter() - start >= 0.08
    assert r.status == 200
    assert sim.engine.failed == {}


@pytest.mark.parametrize(("after", "events"), [(None, 3), ("5", 5), ("0", 0), ("100", 17)])
async def test_cut_stream(sim: SimServer, raw: Any, after: str | None, events: int) -> None:
    headers = fault("cut") if after is None else fault("cut", **{"x-sim-fault-after": after})
    r = await raw.post(sim, CHAT, STREAM, headers)
    assert r.status == 200
    assert not r.complete
    assert len(r.events) == events
    assert b"[DONE]" not in r.body
    s = await stats(raw, sim)
    assert s["failed"] == {"cut": 1}
    # Tokens produced are the ones sent: the role chunk carries none.
    assert s["completion_tokens_total"] == max(events - 1, 0)
    assert s["running"] == 0


async def test_cut_non_stream_sends_part_of_the_body(sim: SimServer, raw: Any) -> None:
    r = await raw.post(sim, CHAT, BODY, fault("cut"))
    assert r.status == 200
    assert int(r.headers["content-length"]) > len(r.body) > 0
    assert not r.complete


async def test_stall_keeps_the_connection_open(sim: SimServer, raw: Any) -> None:
    r = await raw.post(sim, CHAT, STREAM, fault("stall", **{"x-sim-fault-after": "4"}), wait_s=0.3)
    assert r.timed_out
    assert not r.reset
    assert len(r.events) == 4
    assert not r.complete
    await asyncio.sleep(0.05)
    s = await stats(raw, sim)
    assert s["running"] == 0  # the slot was freed when the client gave up
    assert s["failed"] == {"stall": 1}
    assert s["completion_tokens_total"] == 3


async def test_stall_non_stream(sim: SimServer, raw: Any) -> None:
    r = await raw.post(sim, CHAT, BODY, fault("stall"), wait_s=0.2)
    assert r.timed_out
    assert r.status == 200
    assert 0 < len(r.body) < int(r.headers["content-length"])


async def test_malformed_stream(sim: SimServer, raw: Any) -> None:
    r = await raw.post(sim, CHAT, STREAM, fault("malformed", **{"x-sim-fault-after": "2"}))
    assert r.complete  # the chunked body itself ends cleanly
    assert [orjson.loads(e)["object"] for e in r.events[:2]] == ["chat.completion.chunk"] * 2
    assert r.events[2:] == [b"{not json"]


async def test_malformed_non_stream(sim: SimServer, raw: Any) -> None:
    r = await raw.post(sim, CHAT, BODY, fault("malformed"))
    assert (r.status, r.body) == (200, b"{not json")


async def test_no_done(sim: SimServer, raw: Any) -> None:
    body = {**STREAM, "stream_options": {"include_usage": True}}
    r = await raw.post(sim, CHAT, body, fault("no-done"))
    assert r.complete
    assert r.body.endswith(b"\n\n")
    assert b"[DONE]" not in r.body
    assert r.chunks[-1]["usage"]["completion_tokens"] == 16
    assert sim.engine.failed == {"no-done": 1}


async def test_faults_apply_to_embeddings(sim: SimServer, raw: Any) -> None:
    r = await raw.post(sim, "/v1/embeddings", {"input": "x"}, fault("error-503"))
    assert r.status == 503
    r = await raw.post(sim, "/v1/embeddings", {"input": "x"}, fault("cut"))
    assert not r.complete


async def test_random_faults_are_seeded(make_sim: Any, raw: Any) -> None:
    config = {"ttft_ms": 0, "tokens_per_s": 0, "seed": 3, "fault_rates": {"error-500": 0.5}}
    one = await make_sim(**config)
    two = await make_sim(**config)

    async def statuses(sim: SimServer) -> list[int]:
        return [(await raw.post(sim, CHAT, BODY)).status for _ in range(30)]

    first = await statuses(one)
    assert first == await statuses(two)
    assert 5 < first.count(500) < 25
    assert set(first) == {200, 500}
    await raw.request(one, "POST", "/sim/reset")
    assert await statuses(one) == first
    # A header always wins over the dice.
    r = await raw.post(one, CHAT, BODY, fault("error-503"))
    assert r.status == 503
