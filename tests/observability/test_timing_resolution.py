"""Stage timings have sub-millisecond resolution in the real server (uvloop), whose
``loop.time()`` advances in whole milliseconds: they are read from ``lockgate.clock``."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

import orjson

from lockgate.sim import SimServer
from tests.integration.test_replicas import free_port, wait_healthy
from tests.support import raw_request

CHAT = b'{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":2}'
_DURATION = re.compile(r"(\w+);dur=([0-9.]+)")


async def test_server_timing_under_uvloop_is_finer_than_a_millisecond(
    tmp_path: Path, sim: SimServer
) -> None:
    port = free_port()
    config = tmp_path / "gateway.yaml"
    config.write_bytes(
        orjson.dumps(
            {
                "server": {"host": "127.0.0.1", "port": port, "data_dir": str(tmp_path / "d")},
                "auth": {"allow_anonymous": True},
                "observability": {"access_log": None},
                "models": [{"name": "m", "deployments": [{"name": "d", "base_url": sim.base_url}]}],
            }
        )
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lockgate", "serve", "--config", str(config),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await wait_healthy(port, process)
        gateway_ms = []
        for _ in range(20):
            answer = await raw_request(port, "POST", "/v1/chat/completions", CHAT)
            assert answer.status == 200
            timings = dict(_DURATION.findall(answer.headers["server-timing"]))
            gateway_ms.append(float(timings["gateway"]))
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 20)
    # Whole milliseconds (what loop.time() under uvloop gives) would be 0.0 or 1.0 here.
    assert any(value != int(value) for value in gateway_ms), gateway_ms
    assert all(0 < value < 50 for value in gateway_ms), gateway_ms
