"""Mid-stream failover: a broken stream is continued on a deployment that can, seamlessly.

The first replica breaks every stream (cut, stall, garbage) after a few events; the
second supports continuation (the simulator does, as vLLM does). The client must get
one complete stream: one id, one role delta, the same text an unbroken stream has,
``[DONE]``, and usage that adds up. Without a continuable deployment, the stream ends
with the explicit in-band error, never with ``[DONE]``.
"""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from lockgate.sim import SimConfig
from tests.routing.fleet import FAST, QUIET, chat, model, replicas, sim_config, spec
from tests.support import RawResponse, raw_request, running_gateway

OUTPUT_TOKENS = 12
HEALTHY = FAST.model_copy(update={"output_tokens": OUTPUT_TOKENS})
# First choice nearly always (weights), so the broken replica starts every stream.
WEIGHTS = [1_000_000, 0.001]


def breaking(kind: str, after: int = 4) -> SimConfig:
    return sim_config(
        output_tokens=OUTPUT_TOKENS, fault_rates={kind: 1.0}, fault_after_chunks=after
    )


def chunks(answer: RawResponse) -> list[dict[str, Any]]:
    return [json.loads(d) for d in answer.sse_data() if d != b"[DONE]"]


def text_of(events: list[dict[str, Any]]) -> str:
    return "".join(
        c["delta"].get("content") or "" for e in events for c in e["choices"] if "delta" in c
    )


async def unbroken(port: int, **fields: Any) -> RawResponse:
    body = {"model": "chat", "messages": [{"role": "user", "content": "Tell me about rivers"}]}
    body.update(fields, stream=True)
    return await raw_request(
        port, "POST", "/v1/chat/completions", json.dumps(body).encode(), {}, timeout_s=10
    )


def routing(**extra: Any) -> dict[str, Any]:
    return {**QUIET, "strategy": "weighted_random", **extra}


@pytest.mark.parametrize("kind", ["cut", "malformed", "stall"])
async def test_a_broken_stream_continues_seamlessly_on_a_replica_that_can(kind: str) -> None:
    timeouts = {"idle_s": 0.3}
    async with replicas(breaking(kind), HEALTHY) as (bad, good):
        m = model(
            "chat",
            [bad, good],
            routing=routing(),
            weight=WEIGHTS,
            supports_continuation=[False, True],
            timeouts=[timeouts, timeouts],
        )
        async with running_gateway(spec([m])) as gw:
            answer = await chat(
                gw.port, "chat", stream=True, stream_options={"include_usage": True}
            )
            reference = await unbroken(good.port, stream_options={"include_usage": True})
            totals = gw.totals
    assert answer.status == 200
    data = answer.sse_data()
    assert data[-1] == b"[DONE]"
    events = chunks(answer)
    assert not any("error" in e for e in events)
    assert text_of(events) == text_of(chunks(reference))
    assert len({e["id"] for e in events}) == 1, "one stream id throughout"
    assert {e["model"] for e in events} == {"chat"}
    roles = [c for e in events for c in e["choices"] if "role" in c.get("delta", {})]
    assert len(roles) == 1, "no second role delta from the continuation"
    finished = [c["finish_reason"] for e in events for c in e["choices"] if c["finish_reason"]]
    assert finished == ["stop"]
    usage = events[-1]["usage"]
    assert usage["completion_tokens"] == OUTPUT_TOKENS  # first part + continuation
    assert usage["total_tokens"] == usage["prompt_tokens"] + OUTPUT_TOKENS
    assert totals.completion_tokens == OUTPUT_TOKENS
    assert totals.errors == 0
    continued = good.engine.requests_total
    assert continued == 2  # the continuation, then the reference
    assert bad.engine.requests_total == 1


async def test_the_continuation_is_what_vllm_expects() -> None:
    async with replicas(breaking("cut"), HEALTHY) as (bad, good):
        m = model(
            "chat",
            [bad, good],
            routing=routing(),
            weight=WEIGHTS,
            supports_continuation=[False, True],
        )
        async with running_gateway(spec([m])) as gw:
            answer = await chat(gw.port, "chat", stream=True, max_tokens=10)
        seen = await raw_request(good.port, "GET", "/sim/requests")
    assert answer.sse_data()[-1] == b"[DONE]"
    body = json.loads(seen.body)["requests"][-1]["body"]
    assert body["continue_final_message"] is True
    assert body["add_generation_prompt"] is False
    assert body["messages"][-1]["role"] == "assistant"
    sent = text_of(chunks(answer))
    assert sent.startswith(body["messages"][-1]["content"])
    # max_tokens shrinks by what was already produced (one token per content delta).
    assert body["max_tokens"] == 10 - len(body["messages"][-1]["content"].split())


async def test_without_a_continuable_deployment_the_stream_ends_with_an_error() -> None:
    async with replicas(breaking("cut"), HEALTHY) as (bad, good):
        m = model("chat", [bad, good], routing=routing(), weight=WEIGHTS)
        async with running_gateway(spec([m])) as gw:
            answer = await chat(gw.port, "chat", stream=True)
            totals = gw.totals
    data = answer.sse_data()
    assert b"[DONE]" not in data
    assert json.loads(data[-1])["error"]["code"] == "upstream_stream_incomplete"
    assert good.engine.requests_total == 0
    assert totals.errors == 1


async def test_failover_off_ends_with_the_error() -> None:
    async with replicas(breaking("cut"), HEALTHY) as (bad, good):
        m = model(
            "chat",
            [bad, good],
            routing=routing(streams={"failover": False}),
            weight=WEIGHTS,
            supports_continuation=[False, True],
        )
        async with running_gateway(spec([m])) as gw:
            answer = await chat(gw.port, "chat", stream=True)
    assert b"[DONE]" not in answer.sse_data()
    assert good.engine.requests_total == 0


async def test_a_continuation_can_be_a_fallback_model() -> None:
    async with replicas(breaking("cut"), HEALTHY) as (bad, good):
        big = model("big", [bad], routing=QUIET, fallbacks=["small"])
        small = model("small", [good], routing=QUIET, supports_continuation=[True])
        async with running_gateway(spec([big, small])) as gw:
            answer = await chat(gw.port, "big", stream=True)
    events = chunks(answer)
    assert answer.sse_data()[-1] == b"[DONE]"
    assert {e["model"] for e in events} == {"big"}, "the client's stream keeps its model"
    assert good.engine.requests_total == 1


async def test_the_sdk_reads_one_complete_answer() -> None:
    async with replicas(breaking("cut", after=6), HEALTHY) as (bad, good):
        m = model(
            "chat",
            [bad, good],
            routing=routing(),
            weight=WEIGHTS,
            supports_continuation=[False, True],
        )
        async with running_gateway(spec([m])) as gw:
            client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{gw.port}/v1", api_key="x")
            async with client:
                stream = await client.chat.completions.create(
                    model="chat",
                    messages=[{"role": "user", "content": "Tell me about rivers"}],
                    stream=True,
                )
                text = "".join(
                    [c.choices[0].delta.content or "" async for c in stream if c.choices]
                )
            reference = await unbroken(good.port)
    assert text == text_of(chunks(reference))
    assert len(text.split()) == OUTPUT_TOKENS
