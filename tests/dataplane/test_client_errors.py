"""Requests the client got wrong: a clear 4xx in the OpenAI error shape, attributed to the
client, and the gateway unharmed (``test_faults.py`` has the upstream's failures)."""

from __future__ import annotations

import asyncio
import contextlib
import json

import openai
import pytest

from lockgate.sim import SimServer
from tests.dataplane.faults import MESSAGES, assert_error, assert_healthy, chat_body, post
from tests.support import (
    RawResponse,
    RunningGateway,
    gateway_spec,
    raw_request,
    running_gateway,
    sim_model,
)


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
