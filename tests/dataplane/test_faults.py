"""Every way a request can fail gives a clean, attributed error, and the gateway stays healthy.

Faults are injected in the simulator by the ``x-sim-*`` headers, which the test
deployments forward. Raw HTTP is used where exact status, headers and bytes
matter; the official openai SDK where what a client sees matters.
"""

from __future__ import annotations

import json
import time
from typing import Any

import openai
import pytest

from lockgate.sim import SimConfig, SimServer
from tests.dataplane.faults import (
    MESSAGES,
    assert_error,
    assert_healthy,
    chat_body,
    closed_port,
    fault,
    in_band_error,
    post,
)
from tests.support import (
    RunningGateway,
    gateway_spec,
    raw_request,
    running_gateway,
    sim_model,
)


# -- upstream error statuses ---------------------------------------------------------------
async def direct_error(sim: SimServer, headers: dict[str, str]) -> dict[str, Any]:
    """The error the simulator gives for ``headers`` when asked directly."""
    response = await post(sim.port, chat_body("engine-model"), headers)
    assert response.status >= 400
    error: dict[str, Any] = json.loads(response.body)["error"]
    return error


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
@pytest.mark.parametrize(("kind", "status"), [("error-500", 500), ("error-503", 503)])
async def test_upstream_5xx_is_passed_through_attributed_to_the_upstream(
    gateway: RunningGateway, sim: SimServer, kind: str, status: int, stream: bool
) -> None:
    response = await post(gateway.port, chat_body(stream=stream), fault(kind))
    error = assert_error(response, status, f"upstream_http_{status}", "upstream")
    upstream = await direct_error(sim, fault(kind))
    assert upstream["code"] is None  # hence the gateway's stable upstream_http_<status>
    assert (error["type"], error["message"]) == (upstream["type"], upstream["message"])
    assert gateway.totals.errors == 1
    await assert_healthy(gateway.port)


async def test_upstream_429_keeps_retry_after(gateway: RunningGateway, sim: SimServer) -> None:
    response = await post(gateway.port, chat_body(), fault("error-429", retry_after=7))
    error = assert_error(response, 429, "rate_limit_exceeded", "upstream")
    upstream = await direct_error(sim, fault("error-429"))
    assert upstream["code"] == "rate_limit_exceeded"
    assert (error["type"], error["message"]) == (upstream["type"], upstream["message"])
    assert response.headers["retry-after"] == "7"
    assert response.headers["retry-after-ms"] == "7000"
    # The Retry-After is honoured for every request: the only deployment is skipped
    # (no upstream call) until it passes, and the client is told when to come back.
    seen = sim.engine.requests_total
    response = await post(gateway.port, chat_body())
    assert_error(response, 503, "upstream_throttled", "upstream")
    assert 6 <= int(response.headers["retry-after"]) <= 7
    assert sim.engine.requests_total == seen


async def test_upstream_429_is_a_rate_limit_error_for_the_sdk(
    gateway: RunningGateway, client: openai.AsyncOpenAI
) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        await client.chat.completions.create(
            model="sim-chat",
            messages=MESSAGES,
            extra_headers=fault("error-429", retry_after=0.3),
        )
    assert caught.value.status_code == 429
    assert caught.value.code == "rate_limit_exceeded"
    assert caught.value.response.headers["retry-after"] == "0.3"
    assert caught.value.response.headers["x-lockgate-error-source"] == "upstream"
    # A short Retry-After on the only deployment is waited out by the gateway.
    answer = await client.chat.completions.create(model="sim-chat", messages=MESSAGES)
    assert answer.choices[0].message.content


# -- upstream authentication -------------------------------------------------------------
async def test_upstream_401_becomes_502_upstream_auth_failed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LOCKGATE_TEST_RIGHT_KEY", "sim-secret")
    monkeypatch.setenv("LOCKGATE_TEST_WRONG_KEY", "not-the-sim-secret")
    async with (
        SimServer(
            SimConfig(ttft_ms=0, tokens_per_s=0, api_key="sim-secret"), host="127.0.0.1", port=0
        ) as sim,
        running_gateway(
            gateway_spec(
                [
                    sim_model("right", sim.base_url, api_key={"env": "LOCKGATE_TEST_RIGHT_KEY"}),
                    sim_model("wrong", sim.base_url, api_key={"env": "LOCKGATE_TEST_WRONG_KEY"}),
                    sim_model("keyless", sim.base_url),
                ]
            )
        ) as gw,
    ):
        # The control: the simulator does enforce its key and the gateway does send it.
        await assert_healthy(gw.port, "right")
        for model in ("wrong", "keyless"):
            response = await post(gw.port, chat_body(model))
            assert_error(response, 502, "upstream_auth_failed", "upstream")
            assert b"not-the-sim-secret" not in response.body
            await assert_healthy(gw.port, "right")
        async with openai.AsyncOpenAI(base_url=gw.base_url, api_key="x", max_retries=0) as sdk:
            with pytest.raises(openai.APIStatusError) as caught:
                await sdk.chat.completions.create(model="wrong", messages=MESSAGES)
        # The client's own key is not the problem: never an AuthenticationError.
        assert not isinstance(caught.value, openai.AuthenticationError)
        assert caught.value.status_code == 502


# -- broken streams ----------------------------------------------------------------------
async def test_stream_cut_ends_with_an_in_band_error(gateway: RunningGateway) -> None:
    response = await post(gateway.port, chat_body(stream=True), fault("cut", fault_after=3))
    relayed, error = in_band_error(response)
    assert len(relayed) == 3  # every event the upstream sent before the cut arrived
    assert all(json.loads(e)["model"] == "sim-chat" for e in relayed)
    assert error["code"] == "upstream_stream_incomplete"
    assert error["type"] == "upstream_error"
    assert gateway.totals.errors == 1
    await assert_healthy(gateway.port)


async def test_stream_cut_before_any_event_is_a_clean_error(gateway: RunningGateway) -> None:
    response = await post(gateway.port, chat_body(stream=True), fault("cut", fault_after=0))
    # Whether the upstream's head got through before the reset is up to timing (and to how
    # the engine flushes); either way the client gets an attributed error, never silence.
    if response.status == 200:
        relayed, error = in_band_error(response)
        assert relayed == []
        assert error["code"] == "upstream_stream_incomplete"
    else:
        code = response.headers.get("x-lockgate-error-code", "")
        assert code in ("upstream_unavailable", "upstream_stream_incomplete")
        assert_error(response, 502, code, "upstream")
    assert gateway.totals.errors == 1
    await assert_healthy(gateway.port)


async def test_stream_malformed_event_ends_with_an_in_band_error(gateway: RunningGateway) -> None:
    response = await post(gateway.port, chat_body(stream=True), fault("malformed", fault_after=3))
    relayed, error = in_band_error(response)
    assert len(relayed) == 3
    assert b"{not json" not in response.body, "the malformed event must not be relayed"
    assert error["code"] == "upstream_bad_response"
    assert gateway.totals.errors == 1
    await assert_healthy(gateway.port)


@pytest.mark.parametrize("kind", ["cut", "malformed"])
async def test_sdk_raises_while_iterating_a_broken_stream(
    gateway: RunningGateway, client: openai.AsyncOpenAI, kind: str
) -> None:
    stream = await client.chat.completions.create(
        model="sim-chat",
        messages=MESSAGES,
        stream=True,
        extra_headers=fault(kind, fault_after=3),
    )
    chunks = aiter(stream)
    for _ in range(3):  # what the upstream sent before it broke arrives intact
        assert (await anext(chunks)).model == "sim-chat"
    with pytest.raises(openai.APIError) as caught:
        await anext(chunks)
    assert caught.value.code in ("upstream_stream_incomplete", "upstream_bad_response")
    answer = await client.chat.completions.create(model="sim-chat", messages=MESSAGES)
    assert answer.choices[0].message.content


@pytest.mark.parametrize(
    ("kind", "code"),
    [("cut", "upstream_stream_incomplete"), ("malformed", "upstream_bad_response")],
)
async def test_broken_non_stream_answer_is_502(
    gateway: RunningGateway, kind: str, code: str
) -> None:
    response = await post(gateway.port, chat_body(), fault(kind))
    assert_error(response, 502, code, "upstream")
    assert gateway.totals.errors == 1
    await assert_healthy(gateway.port)


async def test_stream_without_done_but_finished_gets_done(
    gateway: RunningGateway, client: openai.AsyncOpenAI
) -> None:
    response = await post(gateway.port, chat_body(stream=True), fault("no-done", output_tokens=5))
    assert response.status == 200
    events = response.sse_data()
    assert events[-1] == b"[DONE]"
    assert events.count(b"[DONE]") == 1
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert not any("error" in c for c in chunks)
    assert gateway.totals.errors == 0
    assert gateway.totals.completion_tokens == 5  # the usage chunk was still read

    stream = await client.chat.completions.create(
        model="sim-chat", messages=MESSAGES, stream=True, extra_headers=fault("no-done")
    )
    sdk_chunks = [c async for c in stream]
    assert sdk_chunks[-1].choices[0].finish_reason is not None


# -- passthrough -------------------------------------------------------------------------------
RERANK = {"model": "sim-chat", "query": "river stone", "documents": ["cloud", "river", "stone"]}


async def test_undeclared_passthrough_path_is_404(gateway: RunningGateway) -> None:
    response = await post(gateway.port, json.dumps(RERANK).encode(), path="/v1/rerank")
    assert_error(response, 404, "unknown_endpoint", "client")
    await assert_healthy(gateway.port)


async def test_declared_passthrough_path_is_relayed(sim: SimServer) -> None:
    model = sim_model(
        "sim-chat", sim.base_url, upstream_model="engine-model", passthrough=["/v1/rerank"]
    )
    async with running_gateway(gateway_spec([model])) as gw:
        response = await post(gw.port, json.dumps(RERANK).encode(), path="/v1/rerank")
        direct = await post(
            sim.port, json.dumps({**RERANK, "model": "engine-model"}).encode(), path="/v1/rerank"
        )
        assert response.status == 200, response.body
        assert response.headers["x-lockgate-deployment"] == "sim-chat-d1"
        assert direct.status == 200
        via_gateway = json.loads(response.body)
        assert via_gateway["results"] == json.loads(direct.body)["results"]
        assert [r["document"]["text"] for r in via_gateway["results"]][-1] == "cloud"
        forwarded = json.loads((await raw_request(sim.port, "GET", "/sim/requests")).body)[
            "requests"
        ]
        assert any(
            r["path"] == "/v1/rerank" and r["body"]["model"] == "engine-model" for r in forwarded
        )
        await assert_healthy(gw.port)


# -- transport failures ------------------------------------------------------------------------
async def test_connection_refused_upstream_is_502_upstream_unavailable(sim: SimServer) -> None:
    dead = sim_model("dead", f"http://127.0.0.1:{closed_port()}/v1")
    async with running_gateway(gateway_spec([dead, sim_model("sim-chat", sim.base_url)])) as gw:
        for stream in (False, True):
            started = time.monotonic()
            response = await post(gw.port, chat_body("dead", stream=stream))
            assert_error(response, 502, "upstream_unavailable", "upstream")
            assert time.monotonic() - started < 1.0, "a refused connection fails at once"
            await assert_healthy(gw.port)
        assert gw.totals.errors == 2
