"""Engine-like timing: TTFT, decode pace, prefix caching, capacity, cancellation."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import openai
import orjson

from lockgate.sim import SimServer, count_chat_prompt_tokens

CHAT = "/v1/chat/completions"
LONG_SYSTEM = " ".join(f"rule{i} applies." for i in range(100))  # 300 tokens


def body(content: str = "hi", **extra: Any) -> dict[str, Any]:
    messages = [{"role": "system", "content": LONG_SYSTEM}, {"role": "user", "content": content}]
    return {"model": "m", "messages": messages, **extra}


async def first_event_s(raw: Any, sim: SimServer, payload: dict[str, Any]) -> tuple[float, Any]:
    """Time until the first SSE event, and the stream (read to the end)."""
    stream = await raw.stream(sim, CHAT, payload)
    start = time.perf_counter()
    await stream.read_until_count(b"data: ", 1)
    ttft = time.perf_counter() - start
    await stream.read_until_count(b"data: [DONE]", 1)
    await stream.close()
    return ttft, stream


async def test_ttft_and_decode_pace(make_sim: Any) -> None:
    sim = await make_sim(ttft_ms=40, prefill_ms_per_token=0, tokens_per_s=200, batch_slowdown=0)
    async with openai.AsyncOpenAI(base_url=sim.base_url, api_key="x") as client:
        start = time.perf_counter()
        stream = await client.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            max_tokens=11,
        )
        arrivals = [time.perf_counter() - start async for _ in stream]
    assert arrivals[0] >= 0.04
    # 10 gaps of 5 ms after the first token.
    assert 0.045 <= arrivals[-1] - arrivals[1] < 0.1


async def test_non_stream_takes_as_long_as_the_stream(make_sim: Any, raw: Any) -> None:
    sim = await make_sim(ttft_ms=30, prefill_ms_per_token=0, tokens_per_s=100, batch_slowdown=0)
    payload = body(max_tokens=6)
    start = time.perf_counter()
    await raw.post(sim, CHAT, payload)
    whole = time.perf_counter() - start
    start = time.perf_counter()
    await raw.post(sim, CHAT, {**payload, "stream": True})
    streamed = time.perf_counter() - start
    assert whole >= 0.08  # 30 ms + 5 gaps x 10 ms
    assert abs(whole - streamed) < 0.03


async def test_prefix_cache_hits_and_shortens_ttft(make_sim: Any, raw: Any) -> None:
    sim = await make_sim(ttft_ms=5, prefill_ms_per_token=0.5, tokens_per_s=0)
    cold, _ = await first_event_s(raw, sim, body("first question", stream=True))
    warm_payload = body("second question", stream=True, stream_options={"include_usage": True})
    warm, stream = await first_event_s(raw, sim, warm_payload)
    # The 300-token system prompt is shared: whole 16-token blocks of it hit.
    usage = stream_usage(stream.data)
    prompt = usage["prompt_tokens"]
    cached = usage["prompt_tokens_details"]["cached_tokens"]
    assert prompt == count_chat_prompt_tokens(warm_payload["messages"]) == 311
    # Shared: the 303-token system message and the next message's "<|start|> user"
    # head, 305 tokens, of which 19 whole 16-token blocks count.
    assert cached == 19 * 16
    assert cold >= 0.005 + 0.0005 * prompt
    assert warm < cold / 2
    assert sim.engine.cached_tokens_total == cached


def stream_usage(data: bytes) -> dict[str, Any]:
    for block in data.split(b"\n\n"):
        start = block.find(b"data: {")
        if start >= 0 and b'"choices":[]' in block:
            return dict(orjson.loads(block[start + 6 :])["usage"])
    raise AssertionError("no usage chunk")


async def test_capacity_makes_the_next_request_wait(make_sim: Any, raw: Any) -> None:
    sim = await make_sim(ttft_ms=0, prefill_ms_per_token=0, tokens_per_s=100, capacity=1)
    payload = body(stream=True, max_tokens=10)  # ~90 ms each
    first = await raw.stream(sim, CHAT, payload)
    await first.read_until_count(b"data: ", 1)
    second = await raw.stream(sim, CHAT, payload)
    await asyncio.sleep(0.02)
    s = (await raw.get(sim, "/sim/stats")).json()
    assert (s["running"], s["waiting"]) == (1, 1)
    metrics = (await raw.get(sim, "/metrics")).body.decode()
    assert 'vllm:num_requests_waiting{model_name="lockgate-sim"} 1.0' in metrics
    assert 'vllm:kv_cache_usage_perc{model_name="lockgate-sim"} 0.0\n' not in metrics
    # Headers come at once (as vLLM), tokens only once the first request is done.
    assert b"200 OK" in await second.read_until_count(b"\r\n\r\n", 1)
    start = time.perf_counter()
    await second.read_until_count(b"data: ", 1)
    waited = time.perf_counter() - start
    assert waited > 0.04
    assert b"data: [DONE]" in await first.read_until_count(b"data: [DONE]", 1)
    await second.read_until_count(b"data: [DONE]", 1)
    await first.close()
    await second.close()
    assert sim.engine.completed == 2


async def test_max_waiting_answers_429(make_sim: Any, raw: Any) -> None:
    sim = await make_sim(ttft_ms=0, tokens_per_s=50, capacity=1, max_waiting=0)
    busy = await raw.stream(sim, CHAT, body(stream=True))
    await busy.read_until_count(b"data: ", 1)
    r = await raw.post(sim, CHAT, body())
    assert r.status == 429
    assert r.headers["retry-after"] == "2"
    assert r.json()["error"]["code"] == "rate_limit_exceeded"
    await busy.close()
    await asyncio.sleep(0.02)
    assert sim.engine.rejected == {"queue_full": 1}
    assert sim.engine.cancelled == 1


async def test_client_disconnect_cancels_and_stops_generation(make_sim: Any, raw: Any) -> None:
    sim = await make_sim(ttft_ms=0, prefill_ms_per_token=0, tokens_per_s=200)
    stream = await raw.stream(sim, CHAT, body(stream=True), {"x-sim-output-tokens": "1000"})
    await stream.read_until_count(b"data: ", 4)
    await stream.close()
    await asyncio.sleep(0.03)
    s = (await raw.get(sim, "/sim/stats")).json()
    assert s["cancelled"] == 1
    assert s["completed"] == 0
    assert s["running"] == 0
    produced = s["completion_tokens_total"]
    assert 3 <= produced < 20
    await asyncio.sleep(0.05)
    assert sim.engine.completion_tokens_total == produced
    assert sim.engine.kv_tokens == 0


async def test_non_stream_disconnect_is_cancelled_too(make_sim: Any, raw: Any) -> None:
    sim = await make_sim(ttft_ms=0, prefill_ms_per_token=0, tokens_per_s=200)
    r = await raw.post(sim, CHAT, body(), {"x-sim-output-tokens": "1000"}, wait_s=0.05)
    assert r.timed_out
    await asyncio.sleep(0.02)
    assert sim.engine.cancelled == 1
    assert 0 < sim.engine.completion_tokens_total < 30
    assert sim.engine.running == 0


async def test_close_cuts_requests_in_flight(make_sim: Any, raw: Any) -> None:
    sim = await make_sim(ttft_ms=0, tokens_per_s=100)
    stream = await raw.stream(sim, CHAT, body(stream=True))
    await stream.read_until_count(b"data: ", 1)
    hung = asyncio.create_task(raw.post(sim, CHAT, body(), {"x-sim-fault": "hang"}))
    await asyncio.sleep(0.02)
    await sim.close()
    assert not sim.app.tasks
    assert (await hung).data == b""
    await stream.close()
    assert sim.engine.running == 0
