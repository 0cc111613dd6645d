"""A client that stops reading slows the engine down instead of filling gateway memory."""

from __future__ import annotations

import asyncio
import json
import time

from lockgate.sim import SimConfig, SimServer
from tests.support import gateway_spec, raw_request, running_gateway, sim_model

TOKENS = 200_000  # ~10 MB of SSE: far more than every socket buffer on the way


async def sim_stats(sim: SimServer) -> dict[str, int]:
    stats: dict[str, int] = json.loads((await raw_request(sim.port, "GET", "/sim/stats")).body)
    return stats


async def test_a_stalled_reader_stalls_the_upstream_and_loses_nothing() -> None:
    async with (
        SimServer(SimConfig(ttft_ms=0, tokens_per_s=0), host="127.0.0.1", port=0) as sim,
        running_gateway(gateway_spec([sim_model("m", sim.base_url)])) as gw,
    ):
        body = json.dumps(
            {"model": "m", "messages": [{"role": "user", "content": "go"}], "stream": True,
             "max_tokens": TOKENS}
        ).encode()  # fmt: skip
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n"
            b"x-sim-output-tokens: %d\r\ncontent-length: %d\r\n\r\n%s" % (TOKENS, len(body), body)
        )
        await writer.drain()
        await asyncio.sleep(1.0)  # the client reads nothing meanwhile
        stalled = await sim_stats(sim)
        assert stalled["completed"] == 0, "the engine finished: nothing pushed back"
        assert stalled["running"] == 1
        # The gateway holds at most its bounded buffers, not the megabytes behind them.
        (conn,) = gw.gateway.server.connections
        assert conn.transport is not None
        assert conn.transport.get_write_buffer_size() < 1024 * 1024
        received, tail = 0, b""
        deadline = time.monotonic() + 30
        while b"data: [DONE]" not in tail:
            chunk = await asyncio.wait_for(reader.read(1 << 20), deadline - time.monotonic())
            assert chunk, "stream ended without [DONE]"
            received += len(chunk)
            tail = (tail + chunk)[-256:]
        writer.close()
        done = await sim_stats(sim)
        assert done["completed"] == 1
        assert done["completion_tokens_total"] == TOKENS
        assert received > 5_000_000
