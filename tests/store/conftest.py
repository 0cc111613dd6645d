"""Fixtures: every store test runs against SQLite (a file under tmp_path) and the real
PostgreSQL (a fresh database per test, dropped afterwards).

PostgreSQL is found at ``LOCKGATE_TEST_POSTGRES`` (default: the local server,
database ``postgres``, used only to CREATE/DROP the test databases). If it is not
reachable the fixture tries once to start the local cluster, then fails loudly:
a store change that was only tested on SQLite is not tested.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from lockgate.store import Store, upgrade
from lockgate.store.database import create_engine
from lockgate.store.schema import metadata
from tests.databases import create_database, drop_database, postgres_admin_dsn

BACKENDS = ("sqlite", "postgresql")


def _in_thread(work: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run async set-up from a sync session fixture, on a loop of its own (the tests'
    loops are per test)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, work()).result()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def database_url(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    """An empty database, never migrated: a SQLite path, or a fresh PostgreSQL database."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'data' / 'lockgate.db'}"
        return
    admin_dsn = postgres_admin_dsn()
    url = await create_database(admin_dsn)
    try:
        yield url
    finally:
        await drop_database(admin_dsn, make_url(url).database or "")


@pytest.fixture(scope="session")
def shared_postgres_url() -> Iterator[str]:
    """One fresh, migrated PostgreSQL database for the session's repository tests.

    CREATE DATABASE costs ~0.3 s, so tests that only need empty tables share this
    one and ``migrated_url`` empties it before each; migration tests still get a
    database of their own (``database_url``).
    """
    admin_dsn = postgres_admin_dsn()
    urls: list[str] = []

    async def create() -> None:
        urls.append(await create_database(admin_dsn))
        await upgrade(urls[0])

    _in_thread(create)
    try:
        yield urls[0]
    finally:
        _in_thread(lambda: drop_database(admin_dsn, make_url(urls[0]).database or ""))


@pytest.fixture
async def migrated_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A migrated database with empty tables."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'data' / 'lockgate.db'}"
        await upgrade(url)
        return url
    url = str(request.getfixturevalue("shared_postgres_url"))
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            # DELETE, not TRUNCATE: for a few rows it avoids new relation files (~10x faster).
            for table in reversed(metadata.sorted_tables):
                await conn.execute(table.delete())
    finally:
        await engine.dispose()
    return url


@pytest.fixture
async def store(migrated_url: str) -> AsyncIterator[Store]:
    """A migrated database with empty tables, opened."""
    opened = await Store.open(migrated_url)
    try:
        yield opened
    finally:
        await opened.close()
