"""Fixtures for the invalidation tests: the real Redis and PostgreSQL (started once if
down), a fresh namespace per test (servers are shared, never assumed empty), and a
report of the measured cross-process latencies at the end of the run."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.invalidation.support import LatencySample, make_bus

REDIS_URL = os.environ.get("LOCKGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_DSN = os.environ.get(
    "LOCKGATE_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_START = [
    "redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", "6379",
    "--save", "", "--appendonly", "no", "--dir", "/var/lib/redis",
    "--logfile", "/var/log/redis/ci.log",
]  # fmt: skip
LATENCIES = pytest.StashKey[list[LatencySample]]()


def _is_listening(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 0), 0.5):
            return True
    except OSError:
        return False


def _is_postgres_ready(url: str) -> bool:
    parts = urlsplit(url)
    command = ["pg_isready", "-q", "-h", parts.hostname or "", "-p", str(parts.port or 5432)]
    return subprocess.run(command, check=False, timeout=10).returncode == 0


def _ensure_running(name: str, is_up: Callable[[], bool], start: list[str]) -> None:
    """Start a local server once if it is down; fail the tests clearly if that does not help."""
    if is_up():
        return
    try:
        result = subprocess.run(start, capture_output=True, text=True, timeout=60, check=False)
        output = f"exit {result.returncode} {(result.stdout + result.stderr).strip()}"
    except (OSError, subprocess.TimeoutExpired) as exc:
        output = repr(exc)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if is_up():
            return
        time.sleep(0.2)
    pytest.fail(f"{name} is down and `{' '.join(start)}` did not bring it up: {output}")


@pytest.fixture(scope="session")
def redis_url() -> str:
    _ensure_running("Redis", lambda: _is_listening(REDIS_URL), REDIS_START)
    return REDIS_URL


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    version = versions[-1] if versions else "?"
    start = ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"]
    _ensure_running("PostgreSQL", lambda: _is_postgres_ready(POSTGRES_DSN), start)
    return POSTGRES_DSN


def _namespace_params(request: pytest.FixtureRequest, kind: str, tmp_path: Path) -> dict[str, str]:
    """Where buses of ``kind`` meet for one test: unique, so concurrent runs never cross."""
    unique = uuid.uuid4().hex[:12]
    if kind == "redis":
        return {"url": request.getfixturevalue("redis_url"), "prefix": f"lockgate-test:{unique}:"}
    if kind == "postgres":
        return {"dsn": request.getfixturevalue("postgres_dsn"), "channel": f"lgtest_{unique}"}
    if kind == "sqlite":
        return {"path": str(tmp_path / "bus" / "invalidation.sqlite3")}
    return {}


class Buses:
    """Builds buses of one kind in one namespace and closes them all after the test."""

    def __init__(self, kind: str, params: dict[str, str]) -> None:
        self.kind = kind
        self.params = params
        self.opened: list[Any] = []

    def new(self) -> Any:
        bus = make_bus(self.kind, self.params)
        self.opened.append(bus)
        return bus

    async def close(self) -> None:
        for bus in self.opened:
            await bus.close()


async def _buses(request: pytest.FixtureRequest, kind: str, tmp_path: Path) -> AsyncIterator[Buses]:
    buses = Buses(kind, _namespace_params(request, kind, tmp_path))
    try:
        yield buses
    finally:
        await buses.close()


@pytest.fixture(params=["inprocess", "redis", "postgres", "sqlite"])
async def any_buses(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Buses]:
    async for buses in _buses(request, request.param, tmp_path):
        yield buses


@pytest.fixture(params=["redis", "postgres", "sqlite"])
async def shared_buses(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Buses]:
    """Buses whose instances reach each other (and other processes)."""
    async for buses in _buses(request, request.param, tmp_path):
        yield buses


@pytest.fixture
def latencies(request: pytest.FixtureRequest) -> list[LatencySample]:
    return request.config.stash.setdefault(LATENCIES, [])


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    samples = config.stash.get(LATENCIES, [])
    if samples:
        terminalreporter.section("invalidation: cross-process delivery latency")
        for sample in samples:
            terminalreporter.write_line(sample.summary())
