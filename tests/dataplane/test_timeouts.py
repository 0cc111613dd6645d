"""Every upstream deadline gives a fast 504 (or an in-band error once a stream has started).

Timeouts are the upstream's fault: the answer is never a 408. Each deadline is
short (0.3 s) and each test checks the error came after the deadline and not
much later.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from lockgate.sim import SimServer
from tests.support import (
    RawResponse,
    RunningGateway,
    gateway_spec,
    raw_request,
    running_gateway,
    sim_model,
)

MESSAGES = [{"role": "user", "content": "How long will this take?"}]
DEADLINE_S = 0.3
# Scheduling slack allowed past a deadline before the test calls the gateway slow.
MARGIN_S = 0.5

QUICK = {"connect_s": DEADLINE_S, "first_byte_s": DEADLINE_S, "idle_s": DEADLINE_S, "total_s": 30}
SHORT_TOTAL = {"connect_s": 1, "first_byte_s": 10, "idle_s": 1, "total_s": DEADLINE_S * 2}


def chat_body(model: str, **fields: Any) -> bytes:
    return json.dumps({"model": model, "messages": MESSAGES, **fields}).encode()


async def timed_post(
    port: int, model: str, headers: dict[str, str], **fields: Any
) -> tuple[RawResponse, float]:
    started = time.monotonic()
    response = await raw_request(
        port,
        "POST",
        "/v1/chat/completions",
        chat_body(model, **fields),
        {"content-type": "application/json", **headers},
    )
    return response, time.monotonic() - started


def assert_prompt(elapsed: float, deadline: float) -> None:
    assert elapsed >= deadline * 0.9, f"gave up after {elapsed:.3f}s, before the {deadline}s limit"
    assert elapsed < deadline + MARGIN_S, f"took {elapsed:.3f}s for a {deadline}s limit"


def assert_504(response: RawResponse, code: str) -> None:
    assert response.status == 504, response.body
    assert response.headers["x-lockgate-error-source"] == "upstream"
    assert response.headers["x-lockgate-error-code"] == code
    error = json.loads(response.body)["error"]
    assert sorted(error) == ["code", "message", "param", "type"]
    assert error["code"] == code


def assert_in_band(response: RawResponse, code: str) -> list[bytes]:
    """200, some events, then an error event with ``code`` and no ``[DONE]``."""
    assert response.status == 200, response.body
    events = response.sse_data()
    assert b"[DONE]" not in events
    error = json.loads(events[-1])["error"]
    assert error["code"] == code
    assert error["type"] == "upstream_error"
    return events[:-1]


async def assert_healthy(port: int, model: str) -> None:
    response = await raw_request(
        port,
        "POST",
        "/v1/chat/completions",
        chat_body(model),
        {"content-type": "application/json"},
    )
    assert response.status == 200, response.body


@pytest.fixture
async def gw(sim: SimServer) -> AsyncIterator[RunningGateway]:
    """``quick`` has 0.3 s connect/first-byte/idle deadlines, ``short-total`` a 0.6 s total."""
    models = [
        sim_model("quick", sim.base_url, timeouts=QUICK),
        sim_model("short-total", sim.base_url, timeouts=SHORT_TOTAL),
    ]
    async with running_gateway(gateway_spec(models)) as running:
        yield running


@contextlib.contextmanager
def unresponsive_listener() -> Iterator[int]:
    """A loopback port whose SYNs go unanswered, so a connect hangs.

    A listener with ``listen(0)`` that never accepts has an accept queue of one;
    once a connection fills it, the kernel drops further SYNs (the client just
    retransmits), exactly like an unreachable host, without leaving the machine.
    """
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(socket.socket())
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port: int = listener.getsockname()[1]
        filler = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=1))
        assert filler.getpeername()[1] == port
        probe = stack.enter_context(socket.socket())
        probe.settimeout(0.1)
        with pytest.raises(TimeoutError):
            probe.connect(("127.0.0.1", port))  # the queue is full: SYNs are now dropped
        yield port


async def test_connect_timeout(sim: SimServer) -> None:
    with unresponsive_listener() as port:
        blackhole = sim_model("blackhole", f"http://127.0.0.1:{port}/v1", timeouts=QUICK)
        async with running_gateway(
            gateway_spec([blackhole, sim_model("sim-chat", sim.base_url)])
        ) as gw:
            for stream in (False, True):
                response, elapsed = await timed_post(gw.port, "blackhole", {}, stream=stream)
                assert_504(response, "upstream_connect_timeout")
                assert_prompt(elapsed, DEADLINE_S)
                await assert_healthy(gw.port, "sim-chat")
            assert gw.totals.errors == 2


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
async def test_first_byte_timeout_on_a_hung_upstream(gw: RunningGateway, stream: bool) -> None:
    response, elapsed = await timed_post(gw.port, "quick", {"x-sim-fault": "hang"}, stream=stream)
    assert_504(response, "upstream_first_byte_timeout")
    assert_prompt(elapsed, DEADLINE_S)
    await assert_healthy(gw.port, "quick")


async def test_first_byte_deadline_is_not_hit_by_a_merely_slow_start(gw: RunningGateway) -> None:
    slow = {"x-sim-fault": "slow-first-token", "x-sim-delay-ms": "100"}
    response, _ = await timed_post(gw.port, "quick", slow)
    assert response.status == 200, response.body
    slower = {"x-sim-fault": "slow-first-token", "x-sim-delay-ms": "2000"}
    response, elapsed = await timed_post(gw.port, "quick", slower)
    assert_504(response, "upstream_first_byte_timeout")
    assert_prompt(elapsed, DEADLINE_S)
    await assert_healthy(gw.port, "quick")


async def test_idle_timeout_mid_stream_is_an_in_band_error(gw: RunningGateway) -> None:
    stall = {"x-sim-fault": "stall", "x-sim-fault-after": "3"}
    response, elapsed = await timed_post(gw.port, "quick", stall, stream=True)
    relayed = assert_in_band(response, "upstream_idle_timeout")
    assert len(relayed) == 3
    assert_prompt(elapsed, DEADLINE_S)
    await assert_healthy(gw.port, "quick")


async def test_idle_timeout_mid_body_is_504(gw: RunningGateway) -> None:
    # The simulator sends the head and half of the body, then nothing.
    response, elapsed = await timed_post(gw.port, "quick", {"x-sim-fault": "stall"})
    assert_504(response, "upstream_idle_timeout")
    assert_prompt(elapsed, DEADLINE_S)
    await assert_healthy(gw.port, "quick")


async def test_total_timeout_cuts_a_stream_that_keeps_flowing(
    gw: RunningGateway, sim: SimServer
) -> None:
    # 5000 tokens at 2000 tokens/s: events never pause for long, but the whole takes 2.5 s.
    response, elapsed = await timed_post(
        gw.port, "short-total", {"x-sim-output-tokens": "5000"}, stream=True
    )
    relayed = assert_in_band(response, "upstream_total_timeout")
    assert len(relayed) > 10, "the stream was flowing when the total deadline hit"
    assert_prompt(elapsed, SHORT_TOTAL["total_s"])
    # The gateway gave up on the upstream too: the engine sees the request cancelled.
    deadline = time.monotonic() + 1.0
    while sim.engine.cancelled == 0:
        assert time.monotonic() < deadline, "the upstream request was not cancelled"
        await asyncio.sleep(0.01)
    assert sim.engine.cancelled == 1
    assert sim.engine.running == 0
    await assert_healthy(gw.port, "short-total")


async def test_total_timeout_before_the_head_is_504(gw: RunningGateway) -> None:
    # first_byte_s is 10 s, but the total deadline (0.6 s) comes first and names itself.
    response, elapsed = await timed_post(gw.port, "short-total", {"x-sim-delay-ms": "3000"})
    assert_504(response, "upstream_total_timeout")
    assert_prompt(elapsed, SHORT_TOTAL["total_s"])
    await assert_healthy(gw.port, "short-total")
