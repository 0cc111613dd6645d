"""``lockgate serve`` flushes usage from a process of its own: killing that process
loses nothing (it is restarted and resumes from the journals), and a gateway killed
outright leaves no flusher behind, only a store that holds every record."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from lockgate.metering.flush_process import PROCESS_NAME
from lockgate.sim import SimServer
from lockgate.store import Store
from lockgate.store.database import default_url
from tests.dataplane.test_workers import children_of, eventually, is_running
from tests.integration.test_replicas import free_port, wait_healthy
from tests.support import raw_request

CHAT = b'{"model":"sim-chat","messages":[{"role":"user","content":"hi"}],"max_tokens":3}'


def flushers_of(pid: int) -> set[int]:
    found = set()
    for child in children_of(pid):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{child}/comm").read_text().strip() == PROCESS_NAME:
                found.add(child)
    return found


async def stored_request_ids(data_dir: Path) -> set[str]:
    store = await Store.open(default_url(str(data_dir)))
    try:
        now = datetime.now(UTC)
        records = await store.usage.list(
            organization_id=None,
            start=now - timedelta(hours=1),
            end=now + timedelta(hours=1),
            limit=1000,
        )
    finally:
        await store.close()
    return {r.request_id for r in records}


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, sim: SimServer) -> AsyncIterator[tuple[int, int, Path]]:
    """``lockgate serve`` (one worker, metering on): yields (pid, port, data_dir)."""
    port = free_port()
    data_dir = tmp_path / "data"
    config = tmp_path / "gateway.yaml"
    config.write_bytes(
        orjson.dumps(
            {
                "server": {"host": "127.0.0.1", "port": port, "data_dir": str(data_dir)},
                "auth": {"allow_anonymous": True},
                "observability": {"access_log": None},
                "models": [
                    {"name": "sim-chat", "deployments": [{"name": "s", "base_url": sim.base_url}]}
                ],
            }
        )
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lockgate", "serve", "--config", str(config),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await wait_healthy(port, process)
        yield process.pid, port, data_dir
    finally:
        for child in children_of(process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        if process.returncode is None:
            process.kill()
        await process.wait()


async def send(port: int, count: int) -> set[str]:
    answers = await asyncio.gather(
        *(raw_request(port, "POST", "/v1/chat/completions", CHAT) for _ in range(count))
    )
    assert all(a.status == 200 for a in answers)
    return {a.headers["x-request-id"] for a in answers}


async def until_stored(data_dir: Path, wanted: set[str], timeout_s: float) -> set[str]:
    deadline = time.monotonic() + timeout_s
    while True:
        stored = await stored_request_ids(data_dir)
        if wanted <= stored or time.monotonic() > deadline:
            return stored
        await asyncio.sleep(0.2)


async def test_a_killed_flusher_is_restarted_and_nothing_is_lost(
    tmp_path: Path, sim: SimServer
) -> None:
    async with serving(tmp_path, sim) as (pid, port, data_dir):
        await eventually(lambda: len(flushers_of(pid)) == 1, 10, "the flusher runs")
        (first,) = flushers_of(pid)
        served = await send(port, 20)
        os.kill(first, signal.SIGKILL)
        served |= await send(port, 20)  # journalled while no flusher runs
        await eventually(
            lambda: len(flushers_of(pid) - {first}) == 1, 10, "a new flusher is started"
        )
        stored = await until_stored(data_dir, served, 15)
    assert served <= stored
    assert len(stored) == 40


async def test_a_gateway_killed_outright_leaves_no_flusher_and_loses_nothing(
    tmp_path: Path, sim: SimServer
) -> None:
    async with serving(tmp_path, sim) as (pid, port, data_dir):
        await eventually(lambda: len(flushers_of(pid)) == 1, 10, "the flusher runs")
        (flusher,) = flushers_of(pid)
        workers = children_of(pid) - {flusher}
        assert workers, "serve --config runs its worker under a supervisor"
        served = await send(port, 30)
        await asyncio.sleep(0.1)  # past the journal's group commit
        os.kill(pid, signal.SIGKILL)
        await eventually(lambda: not is_running(flusher), 10, "the orphaned flusher stops")
        # The worker too: it must not keep serving (and holding the port) on its own.
        await eventually(
            lambda: not any(is_running(w) for w in workers), 10, "the orphaned worker stops"
        )
    assert served <= await stored_request_ids(data_dir)
