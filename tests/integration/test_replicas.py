"""Two gateway replicas sharing PostgreSQL and Redis: revocation and rotation reach both in < 1 s.

Real processes (`lockgate serve`), the real database and Redis, the simulator
as the engine, and the admin actions run from this process as an operator would.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import sys
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from lockgate.controlplane.actions import SYSTEM, AdminActions
from lockgate.invalidation.redis_bus import RedisBus
from lockgate.sim import SimServer
from lockgate.store import Store, upgrade
from lockgate.tenancy.model import KeyStatus
from tests.databases import create_database, drop_database, postgres_admin_dsn
from tests.support import raw_request

REDIS_URL = os.environ.get("LOCKGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PEPPER = secrets.token_bytes(32)
CHAT = b'{"model":"sim-chat","messages":[{"role":"user","content":"hi"}],"max_tokens":2}'


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
async def database_url() -> AsyncIterator[str]:
    admin = postgres_admin_dsn()
    url = await create_database(admin)
    try:
        yield url
    finally:
        await drop_database(admin, make_url(url).database or "")


async def wait_healthy(port: int, process: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.returncode is not None:
            raise AssertionError(f"gateway on port {port} exited with {process.returncode}")
        try:
            if (await raw_request(port, "GET", "/healthz", timeout_s=1)).status == 200:
                return
        except OSError:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError(f"gateway on port {port} did not become healthy")


@pytest.fixture
async def replicas(database_url: str, sim: SimServer, tmp_path: Path) -> AsyncIterator[list[int]]:
    ports = [free_port(), free_port()]
    processes = []
    env = {**os.environ, "LOCKGATE_API_KEY_PEPPER": "hex:" + PEPPER.hex()}
    for index, port in enumerate(ports):
        config = tmp_path / f"replica{index}.yaml"
        config.write_text(
            f"""\
server: {{host: 127.0.0.1, port: {port}, data_dir: {tmp_path / f"data{index}"}}}
database: {{url: "{database_url}"}}
redis: {{url: "{REDIS_URL}"}}
models:
  - name: sim-chat
    deployments: [{{name: sim, base_url: "{sim.base_url}"}}]
"""
        )
        processes.append(
            await asyncio.create_subprocess_exec(
                sys.executable, "-m", "lockgate", "serve", "--config", str(config), env=env,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            )
        )  # fmt: skip
    try:
        for port, process in zip(ports, processes, strict=True):
            await wait_healthy(port, process)
        yield ports
    finally:
        for process in processes:
            if process.returncode is None:
                process.terminate()
        for process in processes:
            await asyncio.wait_for(process.wait(), 15)


@pytest.fixture
async def actions(database_url: str) -> AsyncIterator[AdminActions]:
    await upgrade(database_url)
    store = await Store.open(database_url)
    bus = RedisBus(REDIS_URL)
    await bus.start()
    try:
        yield AdminActions(store, bus, PEPPER)
    finally:
        await bus.close()
        await store.close()


async def status_on(port: int, key: str) -> int:
    response = await raw_request(
        port, "POST", "/v1/chat/completions", CHAT, {"authorization": f"Bearer {key}"}
    )
    return response.status


async def seconds_until(ports: list[int], key: str, status: int) -> float:
    """How long until every replica answers ``status`` for ``key`` (polling every 10 ms)."""
    started = time.monotonic()
    pending = set(ports)
    while pending:
        for port in list(pending):
            if await status_on(port, key) == status:
                pending.discard(port)
        if time.monotonic() - started > 5:
            raise AssertionError(f"replicas {sorted(pending)} still not answering {status}")
        await asyncio.sleep(0.01)
    return time.monotonic() - started


async def test_revocation_reaches_every_replica_within_a_second(
    replicas: list[int], actions: AdminActions
) -> None:
    org = await actions.create_organization(SYSTEM, "acme")
    project = await actions.create_project(SYSTEM, org.id, "prod")
    record, key = await actions.create_api_key(
        SYSTEM, organization_id=org.id, project_id=project.id, name="svc"
    )
    for port in replicas:  # warm both caches
        assert await status_on(port, key) == 200
    await actions.set_api_key_status(
        SYSTEM, organization_id=org.id, key_id=record.id, status=KeyStatus.REVOKED
    )
    elapsed = await seconds_until(replicas, key, 401)
    assert elapsed < 1.0, f"revocation took {elapsed:.3f}s to reach both replicas"


async def test_rotation_without_grace_reaches_every_replica_within_a_second(
    replicas: list[int], actions: AdminActions
) -> None:
    org = await actions.create_organization(SYSTEM, "globex")
    project = await actions.create_project(SYSTEM, org.id, "prod")
    record, old = await actions.create_api_key(
        SYSTEM, organization_id=org.id, project_id=project.id, name="svc"
    )
    for port in replicas:
        assert await status_on(port, old) == 200
    _, new = await actions.rotate_api_key(
        SYSTEM, organization_id=org.id, key_id=record.id, grace=timedelta(0)
    )
    elapsed = await seconds_until(replicas, old, 401)
    assert elapsed < 1.0
    for port in replicas:
        assert await status_on(port, new) == 200


async def test_rotation_grace_keeps_the_old_secret_working(
    replicas: list[int], actions: AdminActions
) -> None:
    org = await actions.create_organization(SYSTEM, "initech")
    project = await actions.create_project(SYSTEM, org.id, "prod")
    record, old = await actions.create_api_key(
        SYSTEM, organization_id=org.id, project_id=project.id, name="svc"
    )
    _, new = await actions.rotate_api_key(
        SYSTEM, organization_id=org.id, key_id=record.id, grace=timedelta(minutes=10)
    )
    await asyncio.sleep(0.2)
    for port in replicas:
        assert await status_on(port, old) == 200
        assert await status_on(port, new) == 200
