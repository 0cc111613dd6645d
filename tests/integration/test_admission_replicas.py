"""Limits stay exact across gateway processes sharing Redis, and survive Redis failing.

Real ``lockgate serve`` processes, the real Redis on this machine (each test
under its own key prefix, deleted afterwards) or a private ``redis-server``
that the outage tests stop, and the simulator as the engine.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from lockgate.sim import SimServer
from tests.integration.test_replicas import free_port, wait_healthy
from tests.support import raw_request

REDIS_URL = os.environ.get("LOCKGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
CHAT = b'{"model":"sim-chat","messages":[{"role":"user","content":"hi"}],"max_tokens":2}'


def replica_config(
    path: Path,
    port: int,
    sim: SimServer,
    redis_url: str,
    prefix: str,
    limits: dict[str, Any],
    timeout_ms: int,
) -> Path:
    config = {
        "server": {"host": "127.0.0.1", "port": port, "data_dir": str(path.parent / f"d{port}")},
        "auth": {"allow_anonymous": True},
        "redis": {"url": redis_url, "key_prefix": prefix},
        "admission": {"backend_timeout_ms": timeout_ms},
        "models": [
            {
                "name": "sim-chat",
                "limits": limits,
                "deployments": [{"name": "sim", "base_url": sim.base_url}],
            }
        ],
    }
    path.write_bytes(orjson.dumps(config))  # JSON is YAML
    return path


@asynccontextmanager
async def replicas(
    count: int,
    tmp_path: Path,
    sim: SimServer,
    redis_url: str,
    limits: dict[str, Any],
    *,
    timeout_ms: int = 200,
) -> AsyncIterator[tuple[list[int], str]]:
    prefix = f"lgtest-{uuid.uuid4().hex[:12]}:"
    ports = [free_port() for _ in range(count)]
    processes = []
    for port in ports:
        path = tmp_path / f"r{port}.yaml"
        config = replica_config(path, port, sim, redis_url, prefix, limits, timeout_ms)
        processes.append(
            await asyncio.create_subprocess_exec(
                sys.executable, "-m", "lockgate", "serve", "--config", str(config),
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            )
        )  # fmt: skip
    try:
        for port, process in zip(ports, processes, strict=True):
            await wait_healthy(port, process)
        yield ports, prefix
    finally:
        for process in processes:
            if process.returncode is None:
                process.terminate()
        for process in processes:
            await asyncio.wait_for(process.wait(), 15)
        await _delete_prefix(redis_url, prefix)


async def _delete_prefix(url: str, prefix: str) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        async for key in client.scan_iter(match=f"{prefix}*"):
            await client.delete(key)
    except OSError:
        pass  # a private server that is already gone
    finally:
        await client.aclose()


async def hammer(ports: list[int], total: int) -> list[int]:
    """``total`` concurrent requests spread evenly over the replicas; their statuses."""
    answers = await asyncio.gather(
        *(
            raw_request(ports[i % len(ports)], "POST", "/v1/chat/completions", CHAT, timeout_s=30)
            for i in range(total)
        )
    )
    return [a.status for a in answers]


@pytest.mark.parametrize("count", [2, 4])
async def test_n_replicas_admit_exactly_the_limit_of_200_concurrent_requests(
    count: int, tmp_path: Path, sim: SimServer
) -> None:
    # A timeout no loaded test machine reaches: a fail-open fallback would be approximate.
    limits = {"requests_per_day": 50}
    async with replicas(count, tmp_path, sim, REDIS_URL, limits, timeout_ms=5000) as (ports, _):
        statuses = await hammer(ports, 200)
    assert statuses.count(200) == 50, statuses
    assert statuses.count(429) == 150
    assert sim.engine.completed == 50


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[tuple[str, list[subprocess.Popen[bytes]]]]:
    """A redis-server of this test's own, which the test may stop and restart."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (./dev test installs it on Debian)")
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    argv += ["--dir", str(tmp_path)]
    servers = [subprocess.Popen(argv, stdout=subprocess.DEVNULL)]
    _wait_port(port)
    yield f"redis://127.0.0.1:{port}/0", servers
    for server in servers:
        if server.poll() is None:
            server.kill()
            server.wait()


def start_redis(port: int, directory: Path) -> subprocess.Popen[bytes]:
    """A private redis-server on ``port`` that keeps nothing on disk; ready on return."""
    binary = shutil.which("redis-server") or "redis-server"
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    server = subprocess.Popen([*argv, "--dir", str(directory)], stdout=subprocess.DEVNULL)
    _wait_port(port)
    return server


def _wait_port(port: int) -> None:
    import socket

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise AssertionError(f"redis-server on {port} did not start")


@pytest.mark.parametrize("policy", ["open", "closed"])
async def test_redis_down_follows_each_limits_failure_policy_without_hanging(
    policy: str,
    tmp_path: Path,
    sim: SimServer,
    private_redis: tuple[str, list[subprocess.Popen[bytes]]],
) -> None:
    url, servers = private_redis
    limits = {"requests_per_minute": 1000, "on_backend_failure": policy}
    async with replicas(1, tmp_path, sim, url, limits) as (ports, _):
        (port,) = ports
        before = await raw_request(port, "POST", "/v1/chat/completions", CHAT)
        assert before.status == 200
        assert before.headers["x-ratelimit-remaining-requests"] == "999"
        servers[0].kill()
        servers[0].wait()
        started = time.monotonic()
        during = [
            await raw_request(port, "POST", "/v1/chat/completions", CHAT, timeout_s=5)
            for _ in range(3)
        ]
        elapsed = time.monotonic() - started
        assert elapsed < 3, "a dead Redis must cost a small timeout, never a hang"
        if policy == "open":
            assert [d.status for d in during] == [200, 200, 200]
        else:
            assert [d.status for d in during] == [503, 503, 503]
            error = orjson.loads(during[0].body)["error"]
            assert error["code"] == "rate_limiter_unavailable"
            assert during[0].headers["x-lockgate-error-source"] == "gateway"
            assert "retry-after" in during[0].headers
        # Redis comes back (empty: it kept nothing): decisions use it again.
        port_number = int(url.rsplit(":", 1)[1].split("/")[0])
        servers.append(start_redis(port_number, tmp_path))
        deadline = time.monotonic() + 10
        while True:
            after = await raw_request(port, "POST", "/v1/chat/completions", CHAT)
            if after.status == 200 and after.headers["x-ratelimit-remaining-requests"] == "999":
                break  # a fresh Redis counter: the first request it has seen
            assert time.monotonic() < deadline, (after.status, after.headers)
            await asyncio.sleep(0.2)
