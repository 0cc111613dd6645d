"""Fixtures for the limiter tests: the shared Redis (keys under a fresh prefix per test,
deleted afterwards; never FLUSHDB), private redis-servers that a test may kill or
freeze, and one factory that builds either limiter for the behavioural tests."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from redis.asyncio import Redis

from lockgate.admission.local import LocalLimiter
from lockgate.admission.redis_limiter import RedisLimiter

REDIS_URL = os.environ.get("LOCKGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
# Behavioural tests are not about timeouts: a generous one keeps a busy machine from
# turning a slow answer into a degraded decision.
PATIENT_TIMEOUT_S = 5.0


@pytest.fixture(scope="session")
def redis_url() -> str:
    parts = urlsplit(REDIS_URL)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), 1):
            pass
    except OSError as exc:
        pytest.fail(f"the test Redis at {REDIS_URL} is down: {exc}")
    return REDIS_URL


def new_namespace() -> str:
    return f"lockgate-test:limits:{uuid.uuid4().hex[:12]}:"


async def delete_namespace(url: str, prefix: str) -> None:
    client = Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
async def namespace(redis_url: str) -> AsyncIterator[str]:
    """A key prefix of this test's own; its keys are deleted at the end."""
    prefix = new_namespace()
    yield prefix
    await delete_namespace(redis_url, prefix)


class Limiters:
    """Builds limiters of one kind and closes them all after the test."""

    def __init__(self, kind: str, url: str, namespace: str) -> None:
        self.kind = kind
        self.url = url
        self.namespace = namespace
        self.opened: list[Any] = []

    def new(self, **options: Any) -> LocalLimiter | RedisLimiter:
        limiter: LocalLimiter | RedisLimiter
        if self.kind == "local":
            limiter = LocalLimiter(**options)
        else:
            options.setdefault("timeout_s", PATIENT_TIMEOUT_S)
            limiter = RedisLimiter(self.url, namespace=self.namespace, **options)
        self.opened.append(limiter)
        return limiter

    async def close(self) -> None:
        for limiter in self.opened:
            await limiter.close()


@pytest.fixture(params=["local", "redis"])
async def limiters(request: pytest.FixtureRequest) -> AsyncIterator[Limiters]:
    if request.param == "local":
        built = Limiters("local", "", "")
    else:
        built = Limiters("redis", request.getfixturevalue("redis_url"), new_namespace())
    try:
        yield built
    finally:
        await built.close()
        if built.kind == "redis":
            await delete_namespace(built.url, built.namespace)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PrivateRedis:
    """A redis-server of this test's own on a free port, to kill, freeze and restart."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._directory = directory
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(self._directory),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        client = Redis(port=self.port)
        try:
            async with asyncio.timeout(10):
                while True:
                    try:
                        await client.ping()
                        return
                    except OSError:
                        await asyncio.sleep(0.05)
        finally:
            await client.aclose()

    async def kill(self) -> None:
        """SIGKILL by PID: the server vanishes as in a crash."""
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()

    def client(self) -> Redis:
        return Redis(port=self.port)


@pytest.fixture
async def private_redis(tmp_path: Path) -> AsyncIterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    await server.start()
    try:
        yield server
    finally:
        if server.process is not None and server.process.returncode is None:
            server.process.send_signal(signal.SIGCONT)  # in case a test left it frozen
        await server.kill()


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
