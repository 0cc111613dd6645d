"""``lockgate serve`` with two workers: one /metrics scrape on the admin port covers the
whole node, and the access log has one line per request.

A real subprocess (supervisor + forked workers), Redis for the shared limits,
the simulator as the engine, HTTP over loopback.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
import uuid
from pathlib import Path

import orjson

from lockgate.sim import SimServer
from tests.integration.test_replicas import free_port, wait_healthy
from tests.support import raw_request

REDIS_URL = os.environ.get("LOCKGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
CHAT = b'{"model":"sim-chat","messages":[{"role":"user","content":"hi"}],"max_tokens":2}'


def total(page: str, name: str, **labels: str) -> float:
    """Sum of a metric's samples whose labels include ``labels``."""
    found = 0.0
    for line in page.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            found += float(line.rsplit(" ", 1)[1])
    return found


async def test_one_scrape_counts_every_workers_requests_and_each_is_logged(
    tmp_path: Path, sim: SimServer
) -> None:
    port, admin_port = free_port(), free_port()
    access_log = tmp_path / "access.jsonl"
    config = tmp_path / "gateway.yaml"
    config.write_bytes(
        orjson.dumps(
            {
                "server": {
                    "host": "127.0.0.1",
                    "port": port,
                    "admin_port": admin_port,
                    "workers": 2,
                    "data_dir": str(tmp_path / "data"),
                },
                "auth": {"allow_anonymous": True},
                "redis": {"url": REDIS_URL, "key_prefix": f"lgtest-{uuid.uuid4().hex[:10]}:"},
                "observability": {"access_log": str(access_log)},
                "models": [
                    {
                        "name": "sim-chat",
                        "limits": {"requests_per_minute": 100_000},
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
        # Fresh connections: the kernel spreads them over both workers.
        answers = await asyncio.gather(
            *(raw_request(port, "POST", "/v1/chat/completions", CHAT) for _ in range(40))
        )
        assert all(a.status == 200 for a in answers)
        missing = await raw_request(
            port, "POST", "/v1/chat/completions", CHAT.replace(b"sim-chat", b"nope")
        )
        assert missing.status == 404
        deadline = time.monotonic() + 10
        page, ok = "", 0.0
        while True:  # the admin API may still be starting; workers publish every second
            try:
                page = (await raw_request(admin_port, "GET", "/metrics")).body.decode()
            except ConnectionRefusedError:
                page = ""
            ok = total(page, "lockgate_requests_total", model="sim-chat", status_class="2xx")
            if ok == 40 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert ok == 40, page
        assert total(page, "lockgate_requests_total", error_code="model_not_found") == 1
        assert total(page, "lockgate_worker_processes") == 2
        assert total(page, "lockgate_admission_decisions_total", outcome="admitted") == 40
        assert re.search(r"^gen_ai_client_token_usage_count\{", page, re.M)
    finally:
        process.terminate()
        code = await asyncio.wait_for(process.wait(), 15)
    assert code == 0
    # Drained and closed: every request has its line, with its request id.
    lines = [orjson.loads(line) for line in access_log.read_bytes().splitlines()]
    ids = {line["request_id"] for line in lines}
    assert len(lines) == 41
    assert {a.headers["x-request-id"] for a in answers} <= ids
    assert sum(1 for line in lines if line.get("status") == 404) == 1
