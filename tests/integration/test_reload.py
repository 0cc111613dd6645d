"""SIGHUP reloads ``lockgate serve``'s configuration without dropping a request.

Clients keep streams (each about half a second) and whole requests going through the
reload; every one must complete. After it, the new configuration is in force; an
invalid file, or one changing what needs a restart, is refused and the old one kept.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from lockgate.sim import SimConfig, SimServer
from tests.integration.test_replicas import free_port, wait_healthy
from tests.support import raw_request

STREAM = (
    b'{"model":"chat","messages":[{"role":"user","content":"hi"}],"max_tokens":20,"stream":true}'
)
WHOLE = b'{"model":"chat","messages":[{"role":"user","content":"hi"}],"max_tokens":4}'


def _config(port: int, data_dir: Path, sim: SimServer, **extra: Any) -> bytes:
    models = [{"name": "chat", "deployments": [{"name": "d1", "base_url": sim.base_url}]}]
    models += extra.pop("more_models", [])
    return orjson.dumps(
        {
            "server": {"host": "127.0.0.1", "port": port, "data_dir": str(data_dir)},
            "auth": {"allow_anonymous": True},
            "observability": {"access_log": None},
            "admission": {"enabled": False},
            "models": models,
            **extra,
        }
    )


async def _serve(
    config: Path, workers: int, stderr: int = asyncio.subprocess.PIPE
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lockgate", "serve", "--config", str(config),
        "--workers", str(workers),
        stdout=asyncio.subprocess.DEVNULL, stderr=stderr,
    )  # fmt: skip


async def _traffic(port: int, stop: asyncio.Event, results: list[str]) -> None:
    n = 0
    while not stop.is_set():
        n += 1
        body = STREAM if n % 2 else WHOLE
        try:
            answer = await raw_request(port, "POST", "/v1/chat/completions", body, timeout_s=10)
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError) as error:
            results.append(f"failed: {error!r}")
            continue
        if answer.status != 200:
            results.append(f"status {answer.status}: {answer.body[:200]!r}")
        elif body is STREAM and answer.sse_data()[-1:] != [b"[DONE]"]:
            results.append(f"stream ended without [DONE]: {answer.body[-200:]!r}")
        else:
            results.append("ok")


def _children(pid: int) -> set[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return {int(p) for p in path.read_text().split()} if path.exists() else set()


async def _status(port: int, model: str) -> int:
    body = WHOLE.replace(b'"model":"chat"', b'"model":"%s"' % model.encode())
    return (await raw_request(port, "POST", "/v1/chat/completions", body)).status


@pytest.mark.parametrize("workers", [1, 2])
async def test_sighup_applies_a_new_config_and_no_request_is_dropped(
    tmp_path: Path, workers: int
) -> None:
    # Streams of 20 tokens at 40 tokens/s: each spans the moment the old workers drain.
    slow = SimConfig(ttft_ms=5, tokens_per_s=40, output_tokens=20)
    async with SimServer(slow, host="127.0.0.1") as sim:
        port = free_port()
        data_dir = tmp_path / "data"
        config = tmp_path / "gateway.yaml"
        config.write_bytes(_config(port, data_dir, sim))
        process = await _serve(config, workers)
        try:
            await wait_healthy(port, process)
            old_workers = _children(process.pid)
            assert await _status(port, "chat-v2") == 404
            stop = asyncio.Event()
            results: list[str] = []
            clients = [asyncio.create_task(_traffic(port, stop, results)) for _ in range(8)]
            await asyncio.sleep(0.8)
            deployment = {"name": "d2", "base_url": sim.base_url}
            new_model = {"name": "chat-v2", "deployments": [deployment]}
            config.write_bytes(_config(port, data_dir, sim, more_models=[new_model]))
            os.kill(process.pid, signal.SIGHUP)
            async with asyncio.timeout(30):
                while await _status(port, "chat-v2") != 200:  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
            # The old workers finish their streams, then exit; traffic goes on meanwhile.
            replaced = {p for p in old_workers if not _is_ledger(p)}
            async with asyncio.timeout(30):
                while not replaced.isdisjoint(_children(process.pid)):  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
            await asyncio.sleep(0.3)
            stop.set()
            await asyncio.gather(*clients)
            # The reload is whole: every connection now lands on a new worker.
            assert all([await _status(port, "chat-v2") == 200 for _ in range(10)])
            assert process.returncode is None
        finally:
            process.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(process.wait(), 30)
    assert code == 0
    failures = [r for r in results if r != "ok"]
    assert not failures, failures[:5]
    assert results.count("ok") >= 20


def _is_ledger(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == "lockgate-ledger"
    except OSError:
        return False


async def test_a_bad_reload_is_refused_and_the_old_config_keeps_serving(
    tmp_path: Path, sim: SimServer
) -> None:
    port = free_port()
    data_dir = tmp_path / "data"
    config = tmp_path / "gateway.yaml"
    config.write_bytes(_config(port, data_dir, sim))
    process = await _serve(config, 2)
    try:
        await wait_healthy(port, process)
        workers = _children(process.pid)
        config.write_bytes(b"models: [ {name: broken")  # not even YAML
        os.kill(process.pid, signal.SIGHUP)
        await asyncio.sleep(1.0)
        config.write_bytes(_config(free_port(), data_dir, sim))  # a new port: restart only
        os.kill(process.pid, signal.SIGHUP)
        await asyncio.sleep(1.0)
        other_store = {"url": f"sqlite+aiosqlite:///{tmp_path / 'other.db'}"}
        config.write_bytes(_config(port, data_dir, sim, database=other_store))  # restart only
        os.kill(process.pid, signal.SIGHUP)
        await asyncio.sleep(1.0)
        assert _children(process.pid) == workers  # nothing was replaced
        assert await _status(port, "chat") == 200
    finally:
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), 30)
    assert code == 0
    assert process.stderr is not None
    log = (await process.stderr.read()).decode()
    assert "reload refused, still serving the old configuration" in log
    assert "reload refused: server.port can change only with a restart" in log
    assert "reload refused: database.url can change only with a restart" in log
    assert "Traceback" not in log


async def test_new_workers_that_fail_to_start_abandon_the_reload(
    tmp_path: Path, sim: SimServer
) -> None:
    """A file that validates can still fail in a new worker (here: its usage journal is
    held by another process). The old worker keeps serving, and a later reload works."""
    port = free_port()
    data_dir = tmp_path / "data"
    config = tmp_path / "gateway.yaml"
    config.write_bytes(_config(port, data_dir, sim))
    log_path = tmp_path / "gateway.log"
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        process = await _serve(config, 1, stderr=log_fd)
    finally:
        os.close(log_fd)  # the gateway holds its own copy
    try:
        await wait_healthy(port, process)
        workers = {p for p in _children(process.pid) if not _is_ledger(p)}
        # The new worker takes slot 1; hold its journal's lock as another gateway would.
        usage = data_dir / "usage"
        usage.mkdir(parents=True, exist_ok=True)
        held = os.open(usage / "journal-1.db.lock", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
            deployment = {"name": "d2", "base_url": sim.base_url}
            new_model = {"name": "chat-v2", "deployments": [deployment]}
            config.write_bytes(_config(port, data_dir, sim, more_models=[new_model]))
            os.kill(process.pid, signal.SIGHUP)
            async with asyncio.timeout(30):
                while b"reload abandoned" not in log_path.read_bytes():  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
            assert {p for p in _children(process.pid) if not _is_ledger(p)} == workers
            assert await _status(port, "chat") == 200
            assert await _status(port, "chat-v2") == 404  # the old configuration, whole
        finally:
            os.close(held)  # releases the lock
        os.kill(process.pid, signal.SIGHUP)  # the journal is free now: this one succeeds
        async with asyncio.timeout(30):
            while await _status(port, "chat-v2") != 200:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        assert process.returncode is None
    finally:
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), 30)
    assert code == 0
    log = log_path.read_text()
    assert "reload abandoned (worker 1 exited); still serving the old configuration" in log
    assert "journal-1.db is in use by another process" in log
