"""Fixtures: a migrated store on SQLite (a file under tmp_path) and on the real PostgreSQL
(one database for the session, its ledger emptied before each test)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from lockgate.store import Store, upgrade
from lockgate.store.database import create_engine
from lockgate.store.schema import usage_records
from tests.databases import create_database, drop_database, postgres_admin_dsn


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def metering_postgres_url() -> Iterator[str]:
    admin_dsn = postgres_admin_dsn()
    with ThreadPoolExecutor(max_workers=1) as pool:
        url = pool.submit(asyncio.run, create_database(admin_dsn)).result()
        pool.submit(asyncio.run, upgrade(url)).result()
        try:
            yield url
        finally:
            name = make_url(url).database or ""
            pool.submit(asyncio.run, drop_database(admin_dsn, name)).result()


@pytest.fixture
async def store_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A migrated database whose ledger is empty."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'store' / 'lockgate.db'}"
        await upgrade(url)
        return url
    url = str(request.getfixturevalue("metering_postgres_url"))
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(usage_records.delete())
    finally:
        await engine.dispose()
    return url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    opened = await Store.open(store_url)
    try:
        yield opened
    finally:
        await opened.close()
