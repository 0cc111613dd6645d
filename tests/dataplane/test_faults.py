"""Every way a request can fail gives a clean, attributed error, and the gateway stays healthy.

Faults are injected in the simulator by the ``x-sim-*`` headers, which the test
deployments forward. Raw HTTP is used where exact status, headers and bytes
matter; the official openai SDK where what a client sees matters.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest

from lockgate.sim import SimConfig, SimServer
from tests.support import (
    RawResponse,
    RunningGateway,
    gateway_spec,
    raw_request,
    running_gateway,
    sim_model,
)

MESSAGES = [{"role": "user", "content": "Tell me about the river and the stone"}]
ERROR_FIELDS = ["code", "message", "param", "type"]


def chat_body(model: str = "sim-chat", **fields: Any) -> bytes:
    return json.dumps({"model": model, "messages": MESSAGES, **fields}).encode()


async def post(
    port: int,
    body: bytes,
    headers: dict[str, str] | None = None,
    path: str = "/v1/chat/completions",
) -> RawResponse:
    return await raw_request(
        port, "POST", path, body, {"content-type": "application/json", **(headers or {})}
    )


def fault(kind: str, **options: int | float) -> dict[str, str]:
    """Headers asking the simulator for ``kind``; options become ``x-sim-<name>`` headers."""
    headers = {"x-sim-fault": kind}
    for name, value in options.items():
        headers[f"x-sim-{name.replace('_', '-')}"] = str(value)
    return headers


def assert_error(
    response: RawResponse, status: int, code: str, source: str, param: str | None = None
) -> dict[str, Any]:
    """A complete error answer: status, attribution headers and the OpenAI error shape."""
    assert response.status == status, response.body
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-lockgate-error-source"] == source
    assert response.headers["x-lockgate-error-code"] == code
    assert response.headers.get("x-request-id"), "errors must carry the request id"
    error: dict[str, Any] = json.loads(response.body)["error"]
    assert sorted(error) == ERROR_FIELDS
    assert error["code"] == code
    assert error["param"] == param
    assert isinstance(error["message"], str)
    assert error["message"]
    return error


def in_band_error(response: RawResponse) -> tuple[list[bytes], dict[str, Any]]:
    """A stream that started fine and ended with an error event instead of ``[DONE]``."""
    assert response.status == 200, response.body
    assert response.headers["content-type"].startswith("text/event-stream")
    events = response.sse_data()
    assert b"[DONE]" not in events, "a broken stream must not end looking complete"
    error: dict[str, Any] = json.loads(events[-1])["error"]
    assert sorted(error) == ERROR_FIELDS
    return events[:-1], error


async def assert_healthy(port: int, model: str = "sim-chat") -> None:
    """A normal request right after a failure still succeeds."""
    response = await post(port, chat_body(model))
    assert response.status == 200, response.body
    answer = json.loads(response.body)
    assert answer["model"] == model
    assert answer["choices"][0]["message"]["content"]


def closed_port() -> int:
    """A loopback port nothing listens on (bound once, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
async def client(gateway: RunningGateway) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=gateway.base_url, api_key="x", max_retries=0
    ) as sdk_client:
        yield sdk_client


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


# -- client errors ---------------------------------------------------------------------------
async def test_unknown_model_is_404_model_not_found(
    gateway: RunningGateway, client: openai.AsyncOpenAI
) -> None:
    response = await post(gateway.port, chat_body("no-such-model"))
    assert_error(response, 404, "model_not_found", "client", param="model")
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(model="no-such-model", messages=MESSAGES)
    await assert_healthy(gateway.port)


@pytest.mark.parametrize("body", [b'{"model": "sim-chat", "messages": [', b"", b"\xff\xfe"])
async def test_malformed_json_is_400_invalid_json(gateway: RunningGateway, body: bytes) -> None:
    response = await post(gateway.port, body)
    assert_error(response, 400, "invalid_json", "client")
    await assert_healthy(gateway.port)


async def test_missing_messages_is_400_missing_required_parameter(
    gateway: RunningGateway,
) -> None:
    response = await post(gateway.port, b'{"model": "sim-chat"}')
    assert_error(response, 400, "missing_required_parameter", "client", param="messages")
    await assert_healthy(gateway.port)


async def _read_whole_response(reader: asyncio.StreamReader) -> RawResponse:
    status = int((await reader.readline()).split()[1])
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers["content-length"]))
    return RawResponse(status, headers, body)


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_body_over_the_limit_is_413_and_the_connection_is_closed(
    sim: SimServer, framing: str
) -> None:
    limit = 2048
    async with running_gateway(
        gateway_spec([sim_model("sim-chat", sim.base_url)], max_body_bytes=limit)
    ) as gw:
        payload = json.dumps(
            {"model": "sim-chat", "messages": [{"role": "user", "content": "x" * 2 * limit}]}
        ).encode()
        head = b"POST /v1/chat/completions HTTP/1.1\r\nhost: test\r\n"
        if framing == "chunked":
            request = head + b"transfer-encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (
                len(payload),
                payload,
            )
        else:
            request = head + b"content-length: %d\r\n\r\n%s" % (len(payload), payload)
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        try:
            writer.write(request)  # a keep-alive request: only the rejection closes it
            response = await asyncio.wait_for(_read_whole_response(reader), 5)
            after = await asyncio.wait_for(reader.read(), 5)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        assert_error(response, 413, "request_too_large", "client")
        assert after == b"", "the connection must be closed after a 413"
        # A body under the limit is still fine.
        assert len(chat_body()) < limit
        await assert_healthy(gw.port)


async def test_get_on_an_inference_endpoint_is_405(gateway: RunningGateway) -> None:
    response = await raw_request(gateway.port, "GET", "/v1/chat/completions")
    assert_error(response, 405, "method_not_allowed", "client")
    await assert_healthy(gateway.port)


async def test_405_names_the_allowed_method(gateway: RunningGateway) -> None:
    # RFC 9110 section 15.5.6: a 405 response MUST carry an Allow header.
    response = await raw_request(gateway.port, "GET", "/v1/chat/completions")
    assert response.status == 405
    assert response.headers.get("allow") == "POST"


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/v1/nothing-here"), ("POST", "/v2/chat/completions")]
)
async def test_unknown_path_is_404_unknown_endpoint(
    gateway: RunningGateway, method: str, path: str
) -> None:
    response = await raw_request(gateway.port, method, path)
    assert_error(response, 404, "unknown_endpoint", "client")
    await assert_healthy(gateway.port)


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
