"""Migration 0004: creates the ledger exactly as ``schema.py`` declares it, and reverses.

(``tests/store/test_migrate.py`` checks the whole schema; its list of expected
tables needs ``usage_records`` added.)
"""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection, make_url

from lockgate.store import current_revision, head_revision, upgrade
from lockgate.store.database import create_engine
from lockgate.store.migrate import alembic_config
from lockgate.store.revision import HEAD_REVISION
from lockgate.store.schema import metadata
from tests.databases import create_database, drop_database, postgres_admin_dsn


@pytest.fixture
async def empty_url(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    admin = postgres_admin_dsn()
    url = await create_database(admin)
    try:
        yield url
    finally:
        await drop_database(admin, make_url(url).database or "")


def _report(connection: Connection) -> tuple[set[str], set[str], list[Any]]:
    inspector = inspect(connection)
    tables = set(inspector.get_table_names())
    indexes = (
        {i["name"] or "" for i in inspector.get_indexes("usage_records")}
        if "usage_records" in tables
        else set()
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SQLite cannot reflect an expression index elsewhere
        diff = compare_metadata(
            MigrationContext.configure(connection, opts={"compare_type": True}), metadata
        )
    return tables, indexes, diff


async def _inspect(url: str) -> tuple[set[str], set[str], list[Any]]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(_report)
    finally:
        await engine.dispose()


async def test_the_ledger_migration_matches_the_schema_and_reverses(empty_url: str) -> None:
    assert head_revision() == HEAD_REVISION
    await upgrade(empty_url)
    tables, indexes, diff = await _inspect(empty_url)
    assert "usage_records" in tables
    assert indexes == {
        "ix_usage_records_organization_id_occurred_at",
        "ix_usage_records_occurred_at",
        "ix_usage_records_request_id",  # 0008: ``lockgate inspect`` finds records by request id
    }
    assert diff == []
    await _downgrade(empty_url, "0003_limits_idempotency")
    tables, _, _ = await _inspect(empty_url)
    assert "usage_records" not in tables
    await upgrade(empty_url)
    assert await current_revision(empty_url) == HEAD_REVISION


async def _downgrade(url: str, revision: str) -> None:
    def run(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, revision)

    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(run)
    finally:
        await engine.dispose()
