"""Graceful drain: in-flight streams finish, new connections are refused, a deadline cuts.

``Gateway.stop(drain_timeout_s)`` is what SIGTERM runs in a worker; here it is
called directly on a gateway in the test's loop, with a slow simulator so a
stream is reliably in flight when the drain begins.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable

import pytest

from lockgate.sim import SimConfig, SimServer
from tests.support import RunningGateway, gateway_spec, running_gateway, sim_model

TOKENS_PER_S = 100


@pytest.fixture
async def slow_sim() -> AsyncIterator[SimServer]:
    config = SimConfig(ttft_ms=1, tokens_per_s=TOKENS_PER_S, output_tokens=16)
    async with SimServer(config, host="127.0.0.1", port=0) as server:
        yield server


@pytest.fixture
async def gw(slow_sim: SimServer) -> AsyncIterator[RunningGateway]:
    async with running_gateway(gateway_spec([sim_model("sim-chat", slow_sim.base_url)])) as gw:
        yield gw


def request_bytes(*, stream: bool, output_tokens: int) -> bytes:
    """A keep-alive request (no ``connection: close``): only the gateway may end it."""
    body = json.dumps(
        {"model": "sim-chat", "messages": [{"role": "user", "content": "Go"}], "stream": stream}
    ).encode()
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n"
        b"x-sim-output-tokens: %d\r\ncontent-length: %d\r\n\r\n%s"
        % (output_tokens, len(body), body)
    )


async def read_head(reader: asyncio.StreamReader) -> dict[str, str]:
    status = await reader.readline()
    assert status.startswith(b"HTTP/1.1 200 "), status
    headers = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    return headers


async def read_chunk(reader: asyncio.StreamReader) -> bytes | None:
    """One chunk of a chunked body: its bytes, b"" for the last chunk, None if cut."""
    size_line = await reader.readline()
    if not size_line.endswith(b"\r\n"):
        return None
    size = int(size_line, 16)
    try:
        data = await reader.readexactly(size + 2)
    except asyncio.IncompleteReadError:
        return None
    return data[:-2]


async def read_rest(reader: asyncio.StreamReader) -> tuple[bytes, bool]:
    """The rest of a chunked body, and whether it ended properly (with the last chunk)."""
    parts = []
    while (chunk := await read_chunk(reader)) is not None:
        if chunk == b"":
            return b"".join(parts), True
        parts.append(chunk)
    return b"".join(parts), False


def sse_data(body: bytes) -> list[bytes]:
    return [line[6:] for line in body.split(b"\n") if line.startswith(b"data: ")]


async def eventually(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s}s: {what}")
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def connection(port: int) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_drain_lets_the_stream_in_flight_finish(
    gw: RunningGateway, slow_sim: SimServer
) -> None:
    tokens = 40  # 0.4 s of stream
    async with (
        connection(gw.port) as (idle_reader, idle_writer),
        connection(gw.port) as (
            reader,
            writer,
        ),
    ):
        # An idle keep-alive connection: one finished request, nothing in flight.
        idle_writer.write(request_bytes(stream=False, output_tokens=1))
        head = await read_head(idle_reader)
        await idle_reader.readexactly(int(head["content-length"]))
        # The stream that must survive the drain.
        writer.write(request_bytes(stream=True, output_tokens=tokens))
        await read_head(reader)
        first = await asyncio.wait_for(read_chunk(reader), 5)
        assert first
        assert first.startswith(b"data: ")

        started = time.monotonic()
        stopping = asyncio.create_task(gw.gateway.stop(drain_timeout_s=5))
        await asyncio.sleep(0)  # the drain begins: listener closed, idle connections closed
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", gw.port)
        assert await asyncio.wait_for(idle_reader.read(), 1) == b"", "idle connection closed"
        assert not stopping.done()

        rest, complete = await asyncio.wait_for(read_rest(reader), 5)
        assert complete
        events = sse_data(first + rest)
        assert events[-1] == b"[DONE]"
        deltas = [json.loads(e)["choices"][0]["delta"].get("content") for e in events[:-1]]
        assert sum(1 for d in deltas if d) == tokens, "the whole answer arrived"
        # Its response ended, so the draining gateway closes the connection.
        assert await asyncio.wait_for(reader.read(), 1) == b""
        assert await asyncio.wait_for(stopping, 2) == 0, "nothing was cut"
        assert time.monotonic() - started < tokens / TOKENS_PER_S + 0.5
    assert slow_sim.engine.completed == 2
    assert slow_sim.engine.cancelled == 0
    assert gw.totals.requests == 2
    assert gw.totals.errors == 0
    assert gw.totals.disconnects == 0


async def test_drain_deadline_cuts_a_stream_that_runs_too_long(
    gw: RunningGateway, slow_sim: SimServer
) -> None:
    async with connection(gw.port) as (reader, writer):
        writer.write(request_bytes(stream=True, output_tokens=2000))  # 20 s of stream
        await read_head(reader)
        assert await asyncio.wait_for(read_chunk(reader), 5)

        started = time.monotonic()
        cut = await gw.gateway.stop(drain_timeout_s=0.3)
        elapsed = time.monotonic() - started
        assert cut == 1
        assert 0.3 <= elapsed < 0.8

        rest, complete = await asyncio.wait_for(read_rest(reader), 2)
        assert not complete, "a cut stream must not end with the last chunk"
        assert b"[DONE]" not in sse_data(rest)
    # The upstream work stops too, and the request is still settled exactly once.
    await eventually(lambda: slow_sim.engine.cancelled == 1, 1.0, "the engine sees the cancel")
    assert slow_sim.engine.running == 0
    await eventually(lambda: gw.totals.requests == 1, 1.0, "the request is settled")
    assert gw.totals.requests == 1
