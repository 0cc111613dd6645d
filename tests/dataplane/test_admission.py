"""Admission on the data plane, end to end: limits, feedback headers, caps, the queue.

These use model-wide limits and gateway-wide settings from the config file (no
tenancy needed); per-key, per-project and per-organisation limits are in
``test_admission_tenants.py``. Everything is real: HTTP over loopback, the
simulator, the openai SDK.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import openai
import orjson
import pytest

from lockgate.sim import SimConfig, SimServer
from tests.support import RunningGateway, gateway_spec, raw_request, running_gateway, sim_model


def chat(max_tokens: int = 4, **extra: Any) -> bytes:
    return orjson.dumps(
        {
            "model": "sim-chat",
            "messages": [{"role": "user", "content": "hello there"}],
            "max_tokens": max_tokens,
            **extra,
        }
    )


@asynccontextmanager
async def gateway_with(
    sim: SimServer,
    limits: dict[str, Any] | None = None,
    admission: dict[str, Any] | None = None,
    **deployment: Any,
) -> AsyncIterator[RunningGateway]:
    model = sim_model("sim-chat", sim.base_url, **deployment)
    if limits is not None:
        model["limits"] = limits
    spec = gateway_spec([model])
    if admission is not None:
        spec = spec.model_validate({**spec.model_dump(), "admission": admission})
    async with running_gateway(spec) as running:
        yield running


async def post(port: int, body: bytes, **headers: str) -> Any:
    return await raw_request(port, "POST", "/v1/chat/completions", body, headers)


async def test_a_request_limit_admits_its_burst_then_refuses_with_openai_feedback(
    sim: SimServer,
) -> None:
    async with gateway_with(sim, {"requests_per_minute": 3}) as gw:
        answers = [await post(gw.port, chat()) for _ in range(4)]
        stats = gw.gateway.dataplane.stages.admitter.stats  # type: ignore[attr-defined]
    assert stats.admitted == 3
    assert dict(stats.refused) == {("model", "requests_per_minute"): 1}
    assert [a.status for a in answers] == [200, 200, 200, 429]
    first, refused = answers[0], answers[3]
    assert first.headers["x-ratelimit-limit-requests"] == "3"
    assert first.headers["x-ratelimit-remaining-requests"] == "2"
    assert first.headers["x-ratelimit-reset-requests"].endswith("s")
    assert answers[2].headers["x-ratelimit-remaining-requests"] == "0"
    error = orjson.loads(refused.body)["error"]
    assert error["code"] == "rate_limit_exceeded"
    assert error["type"] == "requests"
    assert "model requests per minute limit (3 per minute)" in error["message"]
    assert refused.headers["x-lockgate-error-source"] == "client"
    # One request's worth refills in 20 s: Retry-After says so, rounded up.
    assert 19 <= int(refused.headers["retry-after"]) <= 20
    assert 19_000 < int(refused.headers["retry-after-ms"]) <= 20_000
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert sim.engine.completed == 3, "a refused request never reaches the engine"


async def test_the_openai_sdk_waits_as_told_and_then_succeeds(sim: SimServer) -> None:
    # Five a second, one at a time: a second immediate call is told to wait ~200 ms.
    async with gateway_with(sim, {"requests_per_second": 5, "burst": 1}) as gw:
        client = openai.AsyncOpenAI(base_url=gw.base_url, api_key="unused", max_retries=2)
        messages: Any = [{"role": "user", "content": "hi"}]
        await client.chat.completions.create(model="sim-chat", messages=messages, max_tokens=2)
        started = time.monotonic()
        raw = await client.chat.completions.with_raw_response.create(
            model="sim-chat", messages=messages, max_tokens=2
        )
        waited = time.monotonic() - started
        assert raw.http_response.status_code == 200
        assert raw.retries_taken >= 1, "the SDK retried the 429"
        assert waited >= 0.1, "the SDK honoured retry-after-ms rather than retrying at once"
        no_retry = openai.AsyncOpenAI(base_url=gw.base_url, api_key="unused", max_retries=0)
        with pytest.raises(openai.RateLimitError) as refused:
            await no_retry.chat.completions.create(
                model="sim-chat", messages=messages, max_tokens=2
            )
        assert refused.value.code == "rate_limit_exceeded"
        await client.close()
        await no_retry.close()


async def test_token_reservations_are_reconciled_with_real_usage(sim: SimServer) -> None:
    """Reserve body/4 + max_tokens up front; charge what the engine reported after.

    A daily limit, so that refill during the test stays below one token.
    """
    async with gateway_with(sim, {"tokens_per_day": 10_000}) as gw:
        first = await post(gw.port, chat(max_tokens=2000), **{"x-sim-output-tokens": "5"})
        assert first.status == 200
        usage = orjson.loads(first.body)["usage"]
        reserved_left = int(first.headers["x-ratelimit-remaining-tokens"])
        assert reserved_left <= 10_000 - 2000, "the reservation includes max_tokens"
        await asyncio.sleep(0.05)  # settlement runs after the response
        second = await post(gw.port, chat(max_tokens=1), **{"x-sim-output-tokens": "1"})
    remaining = int(second.headers["x-ratelimit-remaining-tokens"])
    # Now the first request is charged at its real usage; the second reserved its estimate.
    estimate_second = -(-len(chat(max_tokens=1)) // 4) + 1
    expected = 10_000 - usage["total_tokens"] - estimate_second
    assert expected - 2 <= remaining <= expected + 2, (remaining, expected)


async def test_a_burst_of_long_answers_overshoots_a_token_limit_by_at_most_one_request(
    sim: SimServer,
) -> None:
    """Each request under-reserves (max_tokens 1) but the engine writes 50 tokens."""
    limit = 400
    async with gateway_with(sim, {"tokens_per_minute": limit}) as gw:
        admitted_tokens = 0
        for _ in range(40):
            answer = await post(gw.port, chat(max_tokens=1), **{"x-sim-output-tokens": "50"})
            if answer.status == 200:
                admitted_tokens += orjson.loads(answer.body)["usage"]["total_tokens"]
            await asyncio.sleep(0.01)  # let settlement land, as it does between real calls
    one_request = 50 + 20
    assert admitted_tokens <= limit + one_request, admitted_tokens
    assert admitted_tokens >= limit - one_request, "the limit was not over-restrictive"


async def test_concurrency_slots_come_back_on_success_error_and_disconnect(
    sim: SimServer,
) -> None:
    async with gateway_with(sim, {"concurrent_requests": 1}) as gw:
        slow = asyncio.create_task(
            post(gw.port, chat(), **{"x-sim-fault": "slow-first-token", "x-sim-delay-ms": "400"})
        )
        await asyncio.sleep(0.1)
        busy = await post(gw.port, chat())
        assert busy.status == 429
        assert orjson.loads(busy.body)["error"]["code"] == "concurrency_limit_exceeded"
        assert (await slow).status == 200
        # Success released it; an upstream error releases it too.
        failed = await post(gw.port, chat(), **{"x-sim-fault": "error-500"})
        assert failed.status >= 500
        assert (await post(gw.port, chat())).status == 200
        # A client that hangs up mid-request releases it as well.
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        body = chat()
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\nx-sim-fault: hang\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body)
        )
        await writer.drain()
        await asyncio.sleep(0.1)
        assert (await post(gw.port, chat())).status == 429, "the hanging request holds the slot"
        writer.close()
        await asyncio.sleep(0.1)
        assert (await post(gw.port, chat())).status == 200
        del reader


async def test_caps_and_block_lists_refuse_before_any_limit_is_charged(sim: SimServer) -> None:
    admission = {"defaults": {"project": {"max_tokens_per_request": 100}}}
    async with gateway_with(sim, {"max_tokens_per_request": 50, "requests_per_minute": 10}) as gw:
        over = await post(gw.port, chat(max_tokens=51))
        assert over.status == 400
        error = orjson.loads(over.body)["error"]
        assert (error["code"], error["param"]) == ("request_over_cap", "max_tokens")
        ok = await post(gw.port, chat(max_tokens=50))
        assert ok.headers["x-ratelimit-remaining-requests"] == "9", "the capped one cost nothing"
    del admission
    async with gateway_with(sim, admission={"block": {"cidrs": ["127.0.0.0/8"]}}) as gw:
        blocked = await post(gw.port, chat())
    assert blocked.status == 403
    assert orjson.loads(blocked.body)["error"]["code"] == "blocked"
    assert sim.engine.completed == 1


async def test_ietf_ratelimit_fields_are_opt_in(sim: SimServer) -> None:
    async with gateway_with(sim, {"requests_per_minute": 10, "tokens_per_minute": 5000}) as gw:
        plain = await post(gw.port, chat())
    assert "ratelimit-policy" not in plain.headers
    admission = {"ietf_headers": True}
    async with gateway_with(
        sim, {"requests_per_minute": 10, "tokens_per_minute": 5000}, admission=admission
    ) as gw:
        answer = await post(gw.port, chat())
    policy = answer.headers["ratelimit-policy"]
    assert '"model-requests_per_minute";q=10;qu="requests";w=60' in policy
    assert '"model-tokens_per_minute";q=5000;qu="tokens";w=60' in policy
    assert '"model-requests_per_minute";r=9;t=' in answer.headers["ratelimit"]


async def test_a_saturated_model_queues_requests_then_sheds_with_retry_after() -> None:
    config = SimConfig(ttft_ms=1000, tokens_per_s=2000, output_tokens=4)
    async with SimServer(config, host="127.0.0.1", port=0) as sim:
        admission = {"queue": {"max_queue": 1, "max_wait_s": 5}}
        async with gateway_with(sim, admission=admission, capacity=1) as gw:
            first = asyncio.create_task(post(gw.port, chat()))
            await asyncio.sleep(0.05)
            second = asyncio.create_task(post(gw.port, chat()))  # waits in the queue
            await asyncio.sleep(0.05)
            started = time.monotonic()
            shed = await post(gw.port, chat())
            shed_after = time.monotonic() - started
            assert (await first).status == 200
            assert (await second).status == 200
    assert shed.status == 503
    assert orjson.loads(shed.body)["error"]["code"] == "overloaded"
    assert int(shed.headers["retry-after"]) >= 1
    # Queued, it would have waited a whole second for the first request to finish.
    assert shed_after < 0.5, "shedding answers at once, never after a wait"
    assert sim.engine.peak_running == 1, "the engine never saw more than its capacity"


async def test_a_spend_limit_refuses_once_the_priced_usage_reaches_it(sim: SimServer) -> None:
    """Fixed price table: $1 per million prompt and $2 per million output tokens."""
    model = sim_model("sim-chat", sim.base_url)
    model["pricing"] = {"input_per_million": "1", "output_per_million": "2"}
    # 0.0001 = 100 micro-dollars: a handful of small requests.
    model["limits"] = {"spend_per_day": "0.0001"}
    async with running_gateway(gateway_spec([model])) as gw:
        spent = 0
        statuses = []
        for _ in range(20):
            answer = await post(gw.port, chat(max_tokens=8), **{"x-sim-output-tokens": "8"})
            statuses.append(answer.status)
            if answer.status == 200:
                usage = orjson.loads(answer.body)["usage"]
                spent += usage["prompt_tokens"] * 1 + usage["completion_tokens"] * 2
            else:
                refused = orjson.loads(answer.body)["error"]
                break
            await asyncio.sleep(0.01)  # settlement lands between calls, as in real use
    assert statuses[-1] == 429
    assert (refused["code"], refused["type"]) == ("budget_exceeded", "insufficient_quota")
    assert "model spend per day limit (0.0001 per day)" in refused["message"]
    # Charged at real usage: within one request's estimate of the budget.
    one_request = -(-len(chat(max_tokens=8)) // 4) * 1 + 8 * 2
    assert 100 - one_request <= spent <= 100 + one_request, spent
