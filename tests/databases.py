"""Real databases for tests: a fresh PostgreSQL database per use, dropped afterwards.

Tests never assume an empty server: each gets a database of its own, named
``lockgate_test_<random>``. If PostgreSQL is down, the local cluster is started
once (as on a fresh CI machine); otherwise the test fails with a clear message.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import Table
from sqlalchemy.engine import make_url

from lockgate.store import upgrade
from lockgate.store.database import create_engine

ADMIN_DSN = os.environ.get(
    "LOCKGATE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def reachable(dsn: str) -> bool:
    url = make_url(dsn)
    try:
        with socket.create_connection((url.host or "127.0.0.1", url.port or 5432), timeout=1):
            return True
    except OSError:
        return False


_START_ATTEMPTED: list[bool] = []


def postgres_admin_dsn() -> str:
    """The admin DSN once PostgreSQL answers; tries to start the local cluster once."""
    if reachable(ADMIN_DSN):
        return ADMIN_DSN
    if _START_ATTEMPTED:
        pytest.fail("PostgreSQL is not reachable (see the first failure)", pytrace=False)
    _START_ATTEMPTED.append(True)
    clusters = sorted(os.listdir("/etc/postgresql")) if Path("/etc/postgresql").is_dir() else []
    if clusters:
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", clusters[-1], "main", "start"],
            check=False,
            capture_output=True,
            timeout=30,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if reachable(ADMIN_DSN):
                return ADMIN_DSN
            time.sleep(0.2)
    pytest.fail(
        f"PostgreSQL is not reachable at {make_url(ADMIN_DSN).render_as_string()} and could "
        "not be started (pg_ctlcluster). The store tests need it: start PostgreSQL or set "
        "LOCKGATE_TEST_POSTGRES to an admin DSN.",
        pytrace=False,
    )


async def drop_database(admin_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def create_database(admin_dsn: str) -> str:
    name = f"lockgate_test_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return make_url(admin_dsn).set(database=name).render_as_string(hide_password=False)


@contextlib.contextmanager
def session_database() -> Iterator[str]:
    """A migrated PostgreSQL database for a whole test session, dropped at its end
    (for fixtures with ``scope="session"``; pytest runs them outside any event loop)."""
    admin_dsn = postgres_admin_dsn()
    with ThreadPoolExecutor(max_workers=1) as pool:
        url = pool.submit(asyncio.run, create_database(admin_dsn)).result()
        pool.submit(asyncio.run, upgrade(url)).result()
        try:
            yield url
        finally:
            name = make_url(url).database or ""
            pool.submit(asyncio.run, drop_database(admin_dsn, name)).result()


async def store_url_on(
    backend: str, tmp_path: Path, postgres_url: Callable[[], str], tables: Sequence[Table]
) -> str:
    """A migrated store for ``backend``: a new SQLite file under ``tmp_path``, or the
    session's PostgreSQL database (``postgres_url``, asked only then) with ``tables``
    emptied."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'store' / 'lockgate.db'}"
        await upgrade(url)
        return url
    return await emptied(postgres_url(), tables)


async def emptied(url: str, tables: Sequence[Table]) -> str:
    """``url`` after deleting every row of ``tables`` (children before parents)."""
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            for table in tables:
                await conn.execute(table.delete())
    finally:
        await engine.dispose()
    return url
