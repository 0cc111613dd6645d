"""Fixtures: a migrated store on SQLite (a file under tmp_path) and on the real PostgreSQL
(one database for the session, its ledger emptied before each test)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from lockgate.store import Store
from lockgate.store.schema import usage_records
from lockgate.store.schema_reporting import (
    prices,
    usage_push_queue,
    usage_push_state,
    usage_rollup_daily,
    usage_rollup_hourly,
    usage_rollup_monthly,
)
from tests.databases import session_database, store_url_on


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def metering_postgres_url() -> Iterator[str]:
    with session_database() as url:
        yield url


@pytest.fixture
async def store_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A migrated database whose ledger (roll-ups, prices and push state too) is empty."""
    return await store_url_on(
        backend,
        tmp_path,
        lambda: str(request.getfixturevalue("metering_postgres_url")),
        (
            usage_records,
            usage_rollup_hourly,
            usage_rollup_daily,
            usage_rollup_monthly,
            prices,
            usage_push_queue,
            usage_push_state,
        ),
    )


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    opened = await Store.open(store_url)
    try:
        yield opened
    finally:
        await opened.close()
