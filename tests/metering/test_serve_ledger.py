"""``lockgate serve`` meters every request: after a graceful stop the store holds one
record per request, and its tokens add up to the engine's own count exactly."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from lockgate.sim import SimServer
from lockgate.store import Store
from lockgate.store.database import default_url
from tests.integration.test_replicas import free_port, wait_healthy
from tests.support import raw_request

CHAT = b'{"model":"sim-chat","messages":[{"role":"user","content":"hello there"}],"max_tokens":5}'


async def test_every_request_served_has_exactly_one_priced_record(
    tmp_path: Path, sim: SimServer
) -> None:
    port = free_port()
    data_dir = tmp_path / "data"
    config = tmp_path / "gateway.yaml"
    since = datetime.now(UTC) - timedelta(minutes=1)
    config.write_bytes(
        orjson.dumps(
            {
                "server": {"host": "127.0.0.1", "port": port, "data_dir": str(data_dir)},
                "auth": {"allow_anonymous": True},
                "observability": {"access_log": None},
                "metering": {
                    "prices": [
                        {
                            "id": "sim-2026",
                            "model": "sim-chat",
                            "effective_from": "2026-01-01T00:00:00Z",
                            "input_per_million": "1",
                            "output_per_million": "2",
                        }
                    ]
                },
                "models": [
                    {
                        "name": "sim-chat",
                        "deployments": [
                            {
                                "name": "sim",
                                "base_url": sim.base_url,
                                "forward_headers": ["x-sim-*"],
                            }
                        ],
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
        answers = await asyncio.gather(
            *(raw_request(port, "POST", "/v1/chat/completions", CHAT) for _ in range(30))
        )
        failed = await raw_request(
            port, "POST", "/v1/chat/completions", CHAT, {"x-sim-fault": "error-500"}
        )
    finally:
        process.terminate()
        code = await asyncio.wait_for(process.wait(), 20)
    assert code == 0
    assert all(a.status == 200 for a in answers)
    assert failed.status >= 500
    store = await Store.open(default_url(str(data_dir)))
    try:
        records = await store.usage.list(
            organization_id=None, start=since, end=datetime.now(UTC) + timedelta(minutes=1)
        )
    finally:
        await store.close()
    assert len(records) == 31
    by_request = {r.request_id: r for r in records}
    assert {a.headers["x-request-id"] for a in answers} <= by_request.keys()
    ok = [r for r in records if r.status == 200]
    assert sum(r.prompt_tokens for r in ok) == sim.engine.prompt_tokens_total
    assert sum(r.completion_tokens for r in ok) == sim.engine.completion_tokens_total
    for record in ok:
        assert record.cost_micros == record.prompt_tokens * 1 + record.completion_tokens * 2
    failure = by_request[failed.headers["x-request-id"]]
    assert failure.status == failed.status
    assert failure.error_source == "upstream"


async def test_a_second_gateway_on_the_same_data_dir_is_refused_with_a_clear_error(
    tmp_path: Path, sim: SimServer
) -> None:
    data_dir = tmp_path / "data"

    def config(name: str) -> Path:
        path = tmp_path / f"{name}.yaml"
        path.write_bytes(
            orjson.dumps(
                {
                    "server": {"host": "127.0.0.1", "port": free_port(), "data_dir": str(data_dir)},
                    "auth": {"allow_anonymous": True},
                    "models": [
                        {"name": "m", "deployments": [{"name": "d", "base_url": sim.base_url}]}
                    ],
                }
            )
        )
        return path

    first = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lockgate", "serve", "--config", str(config("first")),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert first.stdout is not None
        await asyncio.wait_for(first.stdout.readline(), 20)  # "lockgate listening on ..."
        second = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "lockgate", "serve", "--config", str(config("second")),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert second.stderr is not None
        code = await asyncio.wait_for(second.wait(), 20)
        stderr = (await second.stderr.read()).decode()
    finally:
        first.terminate()
        await asyncio.wait_for(first.wait(), 20)
    assert code == 2
    assert "is another gateway using data_dir" in stderr
    assert "Traceback" not in stderr
