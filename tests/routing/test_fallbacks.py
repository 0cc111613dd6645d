"""Fallbacks across models, and the response naming the model that served it."""

from __future__ import annotations

import json
import time

import openai
import pytest

from tests.routing.fleet import (
    FAST,
    QUIET,
    chat,
    closed_port,
    model,
    replicas,
    served_by,
    sim_config,
    spec,
)
from tests.support import running_gateway


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
async def test_a_failing_model_falls_back_and_says_who_answered(stream: bool) -> None:
    broken = sim_config(fault_rates={"error-503": 1.0})
    async with replicas(broken, FAST) as (big_replica, small_replica):
        models = [
            model("big", [big_replica], routing=QUIET, fallbacks=["small"]),
            model("small", [small_replica]),
        ]
        async with running_gateway(spec(models)) as gw:
            answer = await chat(gw.port, "big", stream=stream)
    assert served_by(answer) == "small-r0"
    assert answer.headers["x-lockgate-model"] == "small"
    if stream:
        chunks = [json.loads(e) for e in answer.sse_data() if e != b"[DONE]"]
        assert chunks
        assert {c["model"] for c in chunks} == {"small"}
    else:
        assert json.loads(answer.body)["model"] == "small"
    assert big_replica.engine.requests_total == 3  # its own attempts came first


async def test_a_model_with_no_healthy_deployment_falls_back_at_once() -> None:
    async with replicas(FAST) as (small_replica,):
        models = [
            model(
                "big",
                [closed_port()],
                routing={"outlier": {"consecutive_failures": 1, "base_ejection_s": 30}},
                fallbacks=["small-alias"],
            ),
            {**model("small", [small_replica]), "aliases": ["small-alias"]},
        ]
        async with running_gateway(spec(models)) as gw:
            assert (await chat(gw.port, "big")).headers["x-lockgate-model"] == "small"
            started = time.monotonic()
            answer = await chat(gw.port, "big")  # big is ejected now: straight to small
            assert time.monotonic() - started < 0.2
            assert answer.headers["x-lockgate-model"] == "small"
            async with openai.AsyncOpenAI(base_url=gw.base_url, api_key="x", max_retries=0) as sdk:
                completion = await sdk.chat.completions.create(
                    model="big", messages=[{"role": "user", "content": "hi"}]
                )
            assert completion.model == "small"


async def test_context_overflow_goes_only_to_a_larger_context_fallback() -> None:
    short = sim_config(max_model_len=30)
    async with replicas(short, FAST, FAST) as (short_replica, plain_replica, long_replica):
        models = [
            model(
                "short",
                [short_replica],
                fallbacks=["plain", {"model": "long", "on_context_overflow": True}],
            ),
            model("short-only", [short_replica], fallbacks=["plain"]),
            model("plain", [plain_replica]),
            model("long", [long_replica]),
        ]
        async with running_gateway(spec(models)) as gw:
            small_prompt = await chat(gw.port, "short", "Hi")
            assert small_prompt.headers["x-lockgate-model"] == "short"
            overflow = await chat(gw.port, "short", "word " * 60)
            assert overflow.headers["x-lockgate-model"] == "long"
            assert json.loads(overflow.body)["model"] == "long"
            # Without a larger-context fallback, the 400 is the answer, and never retried.
            refused = await chat(gw.port, "short-only", "word " * 60)
            assert refused.status == 400
            assert refused.headers["x-lockgate-error-code"] == "context_length_exceeded"
    assert plain_replica.engine.requests_total == 0, "a plain fallback is no cure for overflow"
    assert long_replica.engine.requests_total == 1
    assert short_replica.engine.requests_total == 3


async def test_a_client_error_does_not_fall_back() -> None:
    async with replicas(FAST, FAST) as (primary, backup):
        models = [model("a", [primary], fallbacks=["b"]), model("b", [backup])]
        async with running_gateway(spec(models)) as gw:
            answer = await chat(gw.port, "a", headers={"x-sim-fault": "bogus"})
    assert answer.status == 400
    assert backup.engine.requests_total == 0


async def test_when_the_fallbacks_fail_too_the_last_upstream_error_is_returned() -> None:
    models = [
        model("a", [closed_port()], routing=QUIET, fallbacks=["b"]),
        model("b", [closed_port()], routing=QUIET),
    ]
    async with running_gateway(spec(models)) as gw:
        answer = await chat(gw.port, "a")
    assert answer.status == 502
    assert answer.headers["x-lockgate-error-code"] == "upstream_unavailable"
    assert "b-r0" in json.loads(answer.body)["error"]["message"]
