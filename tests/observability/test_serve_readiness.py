"""``lockgate serve``: ``/readyz`` on the data-plane and admin ports follows Redis.

A real gateway process with its own Redis (killed by PID, then restarted on the
same port), the simulator as the engine, the embedded store.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from lockgate.sim import SimServer
from tests.integration.test_replicas import free_port, wait_healthy
from tests.observability.private_redis import PrivateRedis
from tests.support import raw_request


async def readyz(port: int) -> tuple[int, dict[str, Any]]:
    try:
        answer = await raw_request(port, "GET", "/readyz", timeout_s=2)
    except OSError:
        return 0, {}
    return answer.status, orjson.loads(answer.body)


async def until(port: int, status: int, timeout_s: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        got, body = await readyz(port)
        if got == status:
            return body
        assert time.monotonic() < deadline, f"/readyz on {port}: {got} {body}, wanted {status}"
        await asyncio.sleep(0.05)


async def test_readyz_on_both_ports_follows_redis(tmp_path: Path, sim: SimServer) -> None:
    port, admin_port = free_port(), free_port()
    with PrivateRedis() as redis:
        config = tmp_path / "gateway.yaml"
        config.write_bytes(
            orjson.dumps(
                {
                    "server": {
                        "host": "127.0.0.1",
                        "port": port,
                        "admin_port": admin_port,
                        "data_dir": str(tmp_path / "data"),
                    },
                    "auth": {"allow_anonymous": True},
                    "redis": {"url": redis.url},
                    "observability": {
                        "access_log": None,
                        "readiness": {"interval_s": 0.1, "timeout_s": 0.5},
                    },
                    "models": [
                        {
                            "name": "sim-chat",
                            "deployments": [{"name": "sim", "base_url": sim.base_url}],
                        }
                    ],
                }
            )
        )
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "lockgate", "serve", "--config", str(config),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            await wait_healthy(port, process)
            for probe_port in (port, admin_port):
                ready = await until(probe_port, 200)
                assert set(ready["checks"]) == {"store", "redis", "model:sim-chat"}
                assert all(c["status"] == "ok" for c in ready["checks"].values())

            redis.kill()
            for probe_port in (port, admin_port):
                gone = await until(probe_port, 503)
                assert gone["status"] == "not_ready"
                assert gone["checks"]["redis"]["status"] == "failing"
                assert gone["checks"]["store"]["status"] == "ok"
            # Liveness is not readiness: the process is alive, and not restarted.
            assert (await raw_request(port, "GET", "/healthz")).status == 200
            assert (await raw_request(admin_port, "GET", "/healthz")).status == 200

            redis.start()
            for probe_port in (port, admin_port):
                await until(probe_port, 200)
        finally:
            process.terminate()
            code = await asyncio.wait_for(process.wait(), 15)
    assert code == 0
