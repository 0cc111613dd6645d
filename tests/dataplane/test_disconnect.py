"""A client that goes away cancels the upstream work at once, and is metered once.

The simulator generates slowly here (200 tokens/s, 2000 tokens per answer), so
a request left running would keep adding tokens for ten seconds; after the
client leaves, the engine must file the request as ``cancelled`` within about a
second and its token counter must stop moving.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Callable

import pytest

from lockgate.sim import SimConfig, SimServer
from tests.support import RunningGateway, gateway_spec, running_gateway, sim_model

TOKENS_PER_S = 200
LONG_ANSWER = "2000"  # tokens: ten seconds of generation
CANCEL_WITHIN_S = 1.0


@pytest.fixture
async def slow_sim() -> AsyncIterator[SimServer]:
    config = SimConfig(ttft_ms=1, tokens_per_s=TOKENS_PER_S, output_tokens=16)
    async with SimServer(config, host="127.0.0.1", port=0) as server:
        yield server


@pytest.fixture
async def gw(slow_sim: SimServer) -> AsyncIterator[RunningGateway]:
    async with running_gateway(gateway_spec([sim_model("sim-chat", slow_sim.base_url)])) as gw:
        yield gw


def request_bytes(*, stream: bool, headers: dict[str, str]) -> bytes:
    body = json.dumps(
        {"model": "sim-chat", "messages": [{"role": "user", "content": "Go on"}], "stream": stream}
    ).encode()
    head = "POST /v1/chat/completions HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    head += f"content-length: {len(body)}\r\n\r\n"
    return head.encode() + body


async def eventually(condition: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Poll ``condition`` until it holds; returns how long that took."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"not within {timeout_s}s: {what}")
        await asyncio.sleep(0.01)
    return time.monotonic() - started


def hang_up(writer: asyncio.StreamWriter, how: str) -> None:
    if how == "reset":
        # SO_LINGER 0: close() sends RST, as a killed process or a proxy timeout would.
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    writer.close()


async def assert_upstream_cancelled(sim: SimServer, gw: RunningGateway) -> None:
    engine = sim.engine
    took = await eventually(
        lambda: engine.cancelled == 1, CANCEL_WITHIN_S, "the engine cancels the request"
    )
    assert took < CANCEL_WITHIN_S
    assert engine.running == 0
    produced = engine.completion_tokens_total
    assert produced < int(LONG_ANSWER)
    # At 200 tokens/s, 0.15 s of a still-running request would add ~30 tokens.
    await asyncio.sleep(0.15)
    assert engine.completion_tokens_total == produced, "tokens kept coming after the cancel"
    assert engine.completed == 0
    await eventually(lambda: gw.totals.requests >= 1, 1.0, "the gateway settles the request")
    assert gw.totals.requests == 1, "the request is counted exactly once"
    assert gw.totals.disconnects == 1


@pytest.mark.parametrize("how", ["close", "reset"])
async def test_disconnect_mid_stream_cancels_the_upstream(
    gw: RunningGateway, slow_sim: SimServer, how: str
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    try:
        writer.write(request_bytes(stream=True, headers={"x-sim-output-tokens": LONG_ANSWER}))
        received = b""
        async with asyncio.timeout(5):
            while received.count(b"data: ") < 2:
                chunk = await reader.read(65536)
                assert chunk, "the stream ended early"
                received += chunk
        assert received.startswith(b"HTTP/1.1 200 ")
        assert slow_sim.engine.running == 1
    finally:
        hang_up(writer, how)
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    await assert_upstream_cancelled(slow_sim, gw)


@pytest.mark.parametrize(
    "steering",
    [{"x-sim-output-tokens": LONG_ANSWER}, {"x-sim-delay-ms": "10000"}],
    ids=["while-generating", "before-the-first-token"],
)
async def test_disconnect_before_a_non_stream_answer_cancels_the_upstream(
    gw: RunningGateway, slow_sim: SimServer, steering: dict[str, str]
) -> None:
    engine = slow_sim.engine
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    try:
        writer.write(request_bytes(stream=False, headers=steering))
        await eventually(lambda: engine.requests_total == 1, 2.0, "the request reaches the engine")
        if "x-sim-output-tokens" in steering:
            await eventually(
                lambda: engine.completion_tokens_total > 0, 2.0, "generation has started"
            )
        assert not reader.at_eof()
        assert engine.completed == 0
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    await assert_upstream_cancelled(slow_sim, gw)
