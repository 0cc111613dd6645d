"""SIGKILL a whole ``lockgate serve`` (workers and ledger process) under client traffic,
restart it on the same data directory, and check the ledger: every answer a client saw
complete has exactly one record, and no request has two.

This is the end-to-end form of ``test_crash.py``: real clients over HTTP, streamed and
whole answers, two workers, the journal and the ledger process all killed at once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from lockgate.sim import SimServer
from lockgate.store import Store
from lockgate.store.database import default_url
from tests.integration.test_replicas import free_port, wait_healthy
from tests.support import raw_request

WHOLE = b'{"model":"sim-chat","messages":[{"role":"user","content":"hello"}],"max_tokens":8}'
STREAM = (
    b'{"model":"sim-chat","messages":[{"role":"user","content":"hello"}],'
    b'"max_tokens":8,"stream":true}'
)
CLIENTS = 12


def _write_config(path: Path, port: int, data_dir: Path, sim: SimServer, sync: str) -> None:
    path.write_bytes(
        orjson.dumps(
            {
                "server": {"host": "127.0.0.1", "port": port, "data_dir": str(data_dir)},
                "auth": {"allow_anonymous": True},
                "observability": {"access_log": None},
                "metering": {"acknowledge": "durable", "journal_sync": sync},
                # Two workers without Redis: no limits configured, so no admission state.
                "admission": {"enabled": False},
                "models": [
                    {"name": "sim-chat", "deployments": [{"name": "s", "base_url": sim.base_url}]}
                ],
            }
        )
    )


async def _serve(config: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lockgate", "serve", "--config", str(config), "--workers", "2",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,  # its own process group: one SIGKILL takes every process
    )  # fmt: skip


async def _client(port: int, index: int, completed: set[str], stop: asyncio.Event) -> int:
    """Send requests one after another until ``stop``; record the ids of the answers that
    arrived whole. Returns how many requests failed (those cut by the kill)."""
    failures = 0
    n = 0
    while not stop.is_set():
        n += 1
        is_stream = (index + n) % 2 == 0
        try:
            answer = await raw_request(
                port, "POST", "/v1/chat/completions", STREAM if is_stream else WHOLE, timeout_s=5
            )
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError, TimeoutError):
            failures += 1
            await asyncio.sleep(0.01)
            continue
        if answer.status != 200:
            failures += 1
            continue
        if is_stream and answer.sse_data()[-1:] != [b"[DONE]"]:
            failures += 1
            continue
        completed.add(answer.headers["x-request-id"])
    return failures


async def _records(data_dir: Path, since: datetime) -> collections.Counter[str]:
    store = await Store.open(default_url(str(data_dir)))
    counts: collections.Counter[str] = collections.Counter()
    end = datetime.now(UTC) + timedelta(minutes=5)
    after = None
    try:
        while page := await store.usage.list(
            organization_id=None, start=since, end=end, limit=1000, after=after
        ):
            counts.update(r.request_id for r in page)
            after = (page[-1].occurred_at, page[-1].record_id)
    finally:
        await store.close()
    return counts


# normal (no fsync per commit) gives up power-loss safety, never process-crash safety.
@pytest.mark.parametrize("sync", ["full", "normal"])
async def test_sigkill_of_the_whole_gateway_loses_no_answered_request_and_doubles_none(
    tmp_path: Path, sim: SimServer, sync: str
) -> None:
    since = datetime.now(UTC) - timedelta(minutes=1)
    port = free_port()
    data_dir = tmp_path / "data"
    config = tmp_path / "gateway.yaml"
    _write_config(config, port, data_dir, sim, sync)

    completed: set[str] = set()
    process = await _serve(config)
    try:
        await wait_healthy(port, process)
        stop = asyncio.Event()
        clients = [asyncio.create_task(_client(port, i, completed, stop)) for i in range(CLIENTS)]
        # Kill once traffic is flowing, with requests in every stage at that moment.
        deadline = time.monotonic() + 20
        while len(completed) < 400 and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
        await asyncio.sleep(0.3)  # clients see their connections die
        stop.set()
        failures = sum(await asyncio.gather(*clients))
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    assert len(completed) >= 400
    assert failures > 0, "the kill must have cut requests in flight"

    # Restart on the same data directory: the ledger process re-sends what the journals
    # hold. Then stop it gracefully, so everything still journalled is flushed.
    restarted = await _serve(config)
    try:
        await wait_healthy(port, restarted)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if completed <= (await _records(data_dir, since)).keys():
                break
            await asyncio.sleep(0.2)
    finally:
        restarted.terminate()
        assert await asyncio.wait_for(restarted.wait(), 30) == 0

    counts = await _records(data_dir, since)
    missing = completed - counts.keys()
    assert not missing, f"{len(missing)} answered requests have no record"
    doubled = {request_id: n for request_id, n in counts.items() if n > 1}
    assert not doubled, doubled
