"""A stream never ends as if complete when it was not — and the usage record says so.

Each way a stream can go wrong after bytes reached the client (cut, stall past
the idle timeout, garbage, no ``[DONE]``), checked on the wire and in what the
ledger is handed at settle time. A malformed event is skipped or ends the stream
cleanly, as configured, and the gateway keeps serving afterwards.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from lockgate.config import resolve
from lockgate.dataplane.context import RequestContext
from lockgate.metering.capture import CAPTURED, capture
from lockgate.serve import Gateway
from lockgate.sim import SimConfig, SimServer
from tests.support import RawResponse, gateway_spec, raw_request, sim_model

IDLE_S = 0.3


class Records:
    """What the usage ledger would capture for each request, by field name."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def settle(self, ctx: RequestContext) -> None:
        self.rows.append(dict(zip(CAPTURED, capture(ctx), strict=True)))


@asynccontextmanager
async def gateway(base_url: str, **routing: Any) -> AsyncIterator[tuple[Gateway, Records]]:
    model = sim_model("chat", base_url, timeouts={"idle_s": IDLE_S})
    if routing:
        model["routing"] = routing
    records = Records()
    gw = Gateway(resolve(gateway_spec([model])), settler=records)
    await gw.start()
    try:
        yield gw, records
    finally:
        await gw.stop(drain_timeout_s=1.0)


async def stream(port: int, headers: dict[str, str] | None = None) -> RawResponse:
    body = {
        "model": "chat",
        "messages": [{"role": "user", "content": "hello"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    return await raw_request(
        port, "POST", "/v1/chat/completions", json.dumps(body).encode(), headers or {}
    )


@pytest.fixture
async def sim() -> AsyncIterator[SimServer]:
    config = SimConfig(ttft_ms=0, tokens_per_s=0, output_tokens=8)
    async with SimServer(config, host="127.0.0.1") as server:
        yield server


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        ("cut", "upstream_stream_incomplete"),
        ("stall", "upstream_idle_timeout"),
        ("malformed", "upstream_bad_response"),
    ],
)
async def test_a_broken_stream_ends_with_an_error_and_its_record_says_so(
    sim: SimServer, fault: str, code: str
) -> None:
    async with gateway(sim.base_url) as (gw, records):
        answer = await stream(gw.port, {"x-sim-fault": fault, "x-sim-fault-after": "3"})
        healthy = await stream(gw.port)
    data = answer.sse_data()
    assert answer.status == 200
    assert b"[DONE]" not in data
    assert json.loads(data[-1])["error"]["code"] == code
    broken, fine = records.rows
    assert broken["status"] == 200  # the head had gone out…
    assert broken["error_code"] == code  # …but the record is marked
    assert broken["error_source"] == "upstream"
    assert broken["completion_tokens"] is None  # no upstream usage: the ledger estimates
    assert healthy.sse_data()[-1] == b"[DONE]", "the gateway keeps serving"
    assert fine["error_code"] is None


async def test_a_stream_without_done_is_finalised_with_its_usage(sim: SimServer) -> None:
    async with gateway(sim.base_url) as (gw, records):
        answer = await stream(gw.port, {"x-sim-fault": "no-done"})
    data = answer.sse_data()
    assert data[-1] == b"[DONE]"
    assert json.loads(data[-2])["usage"]["completion_tokens"] == 8
    (row,) = records.rows
    assert row["error_code"] is None
    assert row["completion_tokens"] == 8


async def test_a_stream_whose_done_never_comes_is_finalised_at_once(sim: SimServer) -> None:
    async with gateway(sim.base_url) as (gw, records):
        started = time.monotonic()
        answer = await stream(gw.port, {"x-sim-fault": "stall-before-done"})
        elapsed = time.monotonic() - started
    assert answer.sse_data()[-1] == b"[DONE]"
    assert elapsed < IDLE_S, "usage arrived: the answer is whole, no idle wait for [DONE]"
    (row,) = records.rows
    assert row["error_code"] is None
    assert row["completion_tokens"] == 8


# -- a malformed event in the middle of an otherwise good stream ---------------------------
def _event(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def _chunk(content: str | None, finish: str | None = None) -> bytes:
    delta = {"role": "assistant", "content": ""} if content is None else {"content": content}
    return _event(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
    )


GARBLED_STREAM = b"".join(
    [
        _chunk(None),
        _chunk("one"),
        b"data: {not json\n\n",
        _chunk(" two", "stop"),
        _event(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": "m",
                "choices": [],
                "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
            }
        ),
        b"data: [DONE]\n\n",
    ]
)


@asynccontextmanager
async def garbling_upstream() -> AsyncIterator[str]:
    """An engine that puts one malformed event in the middle of a good stream."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        await reader.readexactly(length)
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s"
            % (len(GARBLED_STREAM), GARBLED_STREAM)
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("mode", ["skip", "error"])
async def test_a_malformed_event_is_skipped_or_ends_the_stream_cleanly(mode: str) -> None:
    async with (
        garbling_upstream() as base_url,
        gateway(base_url, streams={"on_malformed_event": mode}) as (gw, records),
    ):
        answer = await stream(gw.port)
    data = answer.sse_data()
    assert b"{not json" not in answer.body
    (row,) = records.rows
    if mode == "skip":
        assert data[-1] == b"[DONE]"
        text = "".join(
            c["delta"].get("content") or "" for d in data[:-1] for c in json.loads(d)["choices"]
        )
        assert text == "one two"
        assert row["error_code"] is None
        assert row["completion_tokens"] == 2
    else:
        assert b"[DONE]" not in data
        assert json.loads(data[-1])["error"]["code"] == "upstream_bad_response"
        assert row["error_code"] == "upstream_bad_response"
