"""Migrations: from empty, again (a no-op), and from several replicas at once."""

from __future__ import annotations

import asyncio
import sys
import warnings
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from lockgate.store import Store, StoreError, current_revision, head_revision, upgrade
from lockgate.store.database import create_engine
from lockgate.store.schema import metadata

TABLES = {
    "alembic_version",
    "api_keys",
    "audit_log",
    "background_leases",
    "budget_crossings",
    "budgets",
    "idempotency_records",
    "model_rollouts",
    "organizations",
    "prices",
    "projects",
    "request_debug_records",
    "request_debug_sessions",
    "role_bindings",
    "runtime_deployments",
    "service_accounts",
    "upstream_secrets",
    "usage_push_queue",
    "usage_push_state",
    "usage_records",
    "usage_rollup_daily",
    "usage_rollup_hourly",
    "usage_rollup_monthly",
    "users",
    "webhook_attempts",
    "webhook_deliveries",
    "webhook_events",
    "webhook_subscriptions",
}


def _schema_report(connection: Connection) -> tuple[set[str], list[Any]]:
    """The tables present, and every difference between the database and ``schema.py``."""
    tables = set(inspect(connection).get_table_names())
    with warnings.catch_warnings():
        # SQLite cannot reflect the expression index on role bindings; Alembic says so.
        warnings.simplefilter("ignore")
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        diff = compare_metadata(context, metadata)
    return tables, diff


async def _inspect(url: str) -> tuple[set[str], list[Any]]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(_schema_report)
    finally:
        await engine.dispose()


async def test_upgrade_from_empty_matches_the_schema_module(database_url: str) -> None:
    assert await current_revision(database_url) is None
    await upgrade(database_url)
    assert await current_revision(database_url) == head_revision()
    tables, diff = await _inspect(database_url)
    assert tables == TABLES
    assert diff == []


async def test_upgrade_again_is_a_no_op(database_url: str) -> None:
    await upgrade(database_url)
    store = await Store.open(database_url)
    org = await store.organizations.create(name="acme")
    await store.close()
    await upgrade(database_url)
    await upgrade(database_url)
    assert await current_revision(database_url) == head_revision()
    store = await Store.open(database_url)
    try:
        assert await store.organizations.get(org.id) == org
    finally:
        await store.close()


async def test_concurrent_upgrades_all_succeed(database_url: str) -> None:
    # Four replicas starting at once against a database nobody has migrated yet.
    await asyncio.gather(*(upgrade(database_url) for _ in range(4)))
    assert await current_revision(database_url) == head_revision()
    tables, diff = await _inspect(database_url)
    assert tables == TABLES
    assert diff == []


async def test_open_refuses_an_unmigrated_database(database_url: str) -> None:
    with pytest.raises(StoreError, match="run the migrations"):
        await Store.open(database_url)
    store = await Store.open(database_url, check_schema=False)
    await store.close()


async def test_unknown_revision_is_a_store_error(database_url: str) -> None:
    with pytest.raises(StoreError, match="migration failed"):
        await upgrade(database_url, revision="9999_nope")


async def test_concurrent_upgrades_from_separate_processes(database_url: str) -> None:
    # Replicas are processes: nothing in-process (no asyncio lock, no Alembic global)
    # can be what serialises them — only the database lock.
    script = (
        "import asyncio, sys; from lockgate.store import upgrade; asyncio.run(upgrade(sys.argv[1]))"
    )
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, database_url, stderr=asyncio.subprocess.PIPE
        )
        for _ in range(4)
    ]
    results = [await process.communicate() for process in processes]
    assert [p.returncode for p in processes] == [0, 0, 0, 0], results
    tables, diff = await _inspect(database_url)
    assert tables == TABLES
    assert diff == []


def test_head_revision_constant_matches_the_migration_scripts() -> None:
    """Serving processes check the schema with a constant instead of loading Alembic."""
    from lockgate.store.migrate import head_revision
    from lockgate.store.revision import HEAD_REVISION

    assert head_revision() == HEAD_REVISION


def test_migrating_in_a_child_process_reports_the_failure() -> None:
    """`lockgate serve` migrates in a throwaway process; its error must reach the operator."""
    from lockgate.config import GatewaySpec, resolve
    from lockgate.startup import prepare_database_in_child
    from lockgate.store import StoreError

    config = resolve(
        GatewaySpec.model_validate({"database": {"url": "postgresql://nobody@127.0.0.1:1/x"}})
    )
    with pytest.raises(StoreError, match=r"127\.0\.0\.1|connect|unavailable"):
        prepare_database_in_child(config)
