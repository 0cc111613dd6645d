"""Engine metrics in the load score: scraped from /metrics (vLLM and SGLang names).

A replica busy with someone else's requests (another gateway, a batch job) looks idle
to this worker's own outstanding count; its engine says otherwise, and routing listens.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from lockgate.routing.engine_load import parse_engine_metrics
from lockgate.sim import SimConfig
from tests.routing.fleet import (
    FAST,
    QUIET,
    chat,
    members,
    model,
    replicas,
    served_by,
    spec,
)
from tests.support import raw_request, running_gateway


async def test_the_simulators_metrics_page_parses() -> None:
    async with replicas(SimConfig(ttft_ms=0, tokens_per_s=20, capacity=1)) as (sim,):
        body = json.dumps(
            {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        ).encode()
        busy = [
            asyncio.create_task(raw_request(sim.port, "POST", "/v1/chat/completions", body))
            for _ in range(3)
        ]
        await asyncio.sleep(0.2)
        page = await raw_request(sim.port, "GET", "/metrics")
        for task in busy:
            task.cancel()
        await asyncio.gather(*busy, return_exceptions=True)
    reading = parse_engine_metrics(page.body, at=1.0)
    assert reading is not None
    assert reading.running == 1
    assert reading.waiting == 2
    assert 0 <= reading.kv_cache_use <= 1


@pytest.mark.parametrize(
    ("page", "running", "waiting", "kv"),
    [
        (  # SGLang
            b'sglang:num_running_reqs{model_name="m"} 3.0\n'
            b'sglang:num_queue_reqs{model_name="m"} 5.0\nsglang:token_usage{model_name="m"} 0.5\n',
            3,
            5,
            0.5,
        ),
        (  # older vLLM, data parallel (two engines: summed; KV: the fullest), timestamps
            b"# HELP vllm:num_requests_running x\n"
            b'vllm:num_requests_running{engine="0",model_name="a b"} 2 1700000000\n'
            b'vllm:num_requests_running{engine="1",model_name="a b"} 1\n'
            b"vllm:num_requests_waiting 4\n"
            b'vllm:gpu_cache_usage_perc{engine="0"} 0.25\n'
            b'vllm:gpu_cache_usage_perc{engine="1"} 0.75\n'
            b"vllm:num_requests_waiting_by_reason 99\nvllm:num_requests_running NaN\n",
            3,
            4,
            0.75,
        ),
        (  # TGI: a batch and a queue, no KV gauge
            b"# TYPE tgi_batch_current_size gauge\ntgi_batch_current_size 6\n"
            b"tgi_queue_size 2\ntgi_batch_current_max_tokens 4096\n",
            6,
            2,
            0.0,
        ),
        (  # llama.cpp's llama-server --metrics
            b"llamacpp:requests_processing 3\nllamacpp:requests_deferred 5\n"
            b"llamacpp:kv_cache_usage_ratio 0.5\nllamacpp:prompt_tokens_total 100\n",
            3,
            5,
            0.5,
        ),
        (  # TensorRT-LLM's trtllm-serve
            b'trtllm_num_requests_running{model_name="m"} 4\n'
            b'trtllm_num_requests_waiting{model_name="m"} 1\n'
            b'trtllm_kv_cache_utilization{model_name="m"} 0.25\n',
            4,
            1,
            0.25,
        ),
        (  # Triton's TensorRT-LLM backend: the meaning is in a label; "active" is not used
            b'nv_trt_llm_request_metrics{model="t",request_type="waiting",version="1"} 3\n'
            b'nv_trt_llm_request_metrics{model="t",request_type="context",version="1"} 1\n'
            b'nv_trt_llm_request_metrics{model="t",request_type="scheduled",version="1"} 4\n'
            b'nv_trt_llm_request_metrics{model="t",request_type="max",version="1"} 512\n'
            b'nv_trt_llm_request_metrics{model="t",request_type="active",version="1"} 7\n'
            b'nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="max",model="t"} 8000\n'
            b'nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="fraction",model="t"} 0.5\n',
            4,
            3,
            0.5,
        ),
        (  # Dynamo: in flight includes the queued; KV use a fraction despite "percent"
            b'dynamo_frontend_inflight_requests{model="k"} 12\n'
            b'dynamo_frontend_queued_requests{model="k"} 2\n'
            b'dynamo_component_kvstats_gpu_cache_usage_percent{worker="w"} 0.4\n',
            10,
            2,
            0.4,
        ),
    ],
)
def test_engine_names(page: bytes, running: float, waiting: float, kv: float) -> None:
    reading = parse_engine_metrics(page, at=0.0)
    assert reading is not None
    assert (reading.running, reading.waiting, reading.kv_cache_use) == (running, waiting, kv)


def test_a_page_without_engine_metrics_is_no_reading() -> None:
    assert parse_engine_metrics(b"process_cpu_seconds_total 1\n", at=0.0) is None


async def test_routing_avoids_a_replica_whose_engine_is_queueing() -> None:
    crowded = SimConfig(ttft_ms=0, tokens_per_s=10, capacity=1, output_tokens=40)
    routing = {**QUIET, "engine_metrics": {"interval_s": 0.05}}
    async with replicas(crowded, FAST) as (busy, idle):
        # Someone else's traffic fills replica 0: one running, three waiting.
        body = json.dumps(
            {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        ).encode()
        others = [
            asyncio.create_task(raw_request(busy.port, "POST", "/v1/chat/completions", body))
            for _ in range(4)
        ]
        try:
            async with running_gateway(spec([model("chat", [busy, idle], routing=routing)])) as gw:
                await asyncio.sleep(0.3)  # a few scrapes
                state = members(gw, "chat")
                assert state["chat-r0"].engine is not None
                assert state["chat-r0"].engine.waiting == 3
                waiting = gw.gateway.dataplane.engine_load.waiting("chat")
                answers = [served_by(await chat(gw.port, "chat")) for _ in range(10)]
        finally:
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)
    assert waiting == 3, "the engines' own queue, for admission"
    assert answers == ["chat-r1"] * 10


async def test_a_failing_metrics_endpoint_gives_no_reading() -> None:
    routing = {
        **QUIET,
        "engine_metrics": {"interval_s": 0.05, "stale_after_s": 0.2, "path": "/nowhere"},
    }
    async with (
        replicas(FAST) as (sim,),
        running_gateway(spec([model("chat", [sim], routing=routing)])) as gw,
    ):
        member = members(gw, "chat")["chat-r0"]
        await asyncio.sleep(0.2)
        assert member.engine is None  # /nowhere is a 404: never a reading
        assert gw.gateway.dataplane.engine_load.waiting("chat") is None
        assert gw.gateway.dataplane.engine_load.is_running


async def test_a_reading_that_goes_stale_is_dropped() -> None:
    routing = {**QUIET, "engine_metrics": {"interval_s": 0.05, "stale_after_s": 0.3}}
    async with (
        replicas(FAST) as (sim,),
        running_gateway(spec([model("chat", [sim], routing=routing)])) as gw,
    ):
        member = members(gw, "chat")["chat-r0"]
        await asyncio.sleep(0.15)
        assert member.engine is not None
        await sim.close()  # the replica (and its metrics) goes away
        await asyncio.sleep(0.1)
        assert member.engine is not None, "kept while it is fresh enough"
        await asyncio.sleep(0.4)
        assert member.engine is None
