"""Migration 0005: the roll-ups of a ledger that already holds records are backfilled."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy.engine import Connection, make_url

from lockgate.store import Store, upgrade
from lockgate.store.database import create_engine
from lockgate.store.migrate import alembic_config
from lockgate.store.repositories.usage import Dimension, Granularity
from lockgate.store.schema import usage_records
from tests.databases import create_database, drop_database, postgres_admin_dsn
from tests.metering.test_rollups import _oracle, _random_records, _rows


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


async def _alembic(url: str, verb: str, revision: str) -> None:
    def run(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        getattr(command, verb)(config, revision)

    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(run)
    finally:
        await engine.dispose()


async def test_existing_records_are_rolled_up_by_the_migration(empty_url: str) -> None:
    await _alembic(empty_url, "upgrade", "0004_usage_ledger")
    records = _random_records(3, 300)
    engine = create_engine(empty_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(usage_records.insert(), [r._asdict() for r in records])
    finally:
        await engine.dispose()
    await upgrade(empty_url)
    store = await Store.open(empty_url)
    try:
        start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 6, 1, tzinfo=UTC)
        for granularity, group_by in (
            (Granularity.HOUR, [Dimension.KEY]),
            (Granularity.DAY, [Dimension.ORGANIZATION, Dimension.MODEL]),
            (Granularity.MONTH, [Dimension.PROJECT]),
        ):
            got = await store.usage.aggregate(
                organization_id=None,
                start=start,
                end=end,
                granularity=granularity,
                group_by=group_by,
            )
            assert _rows(got, group_by) == _oracle(
                records,
                organization_id=None,
                start=start,
                end=end,
                granularity=granularity,
                group_by=group_by,
            )
        # New records add to the backfilled sums; the old ones re-sent add nothing.
        assert await store.usage.insert_many(records[:10]) == 0
    finally:
        await store.close()
    await _alembic(empty_url, "downgrade", "0004_usage_ledger")
    await upgrade(empty_url)
