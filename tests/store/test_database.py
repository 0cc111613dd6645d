"""URLs and engines: what operators may write, and what the SQLite file looks like."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from sqlalchemy import text

from lockgate.store import InvalidDatabaseUrl, Store, StoreUnavailable, default_url, resolve_url
from lockgate.store.database import create_engine, prepare


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u:p@db:5432/lockgate", "postgresql+asyncpg://u:p@db:5432/lockgate"),
        ("postgresql://u@db/lockgate", "postgresql+asyncpg://u@db/lockgate"),
        ("postgresql+asyncpg://u@db/lockgate", "postgresql+asyncpg://u@db/lockgate"),
        (
            "postgresql://u@db/lockgate?sslmode=require",
            "postgresql+asyncpg://u@db/lockgate?ssl=require",
        ),
        (
            "sqlite:////var/lib/lockgate/lockgate.db",
            "sqlite+aiosqlite:////var/lib/lockgate/lockgate.db",
        ),
        ("sqlite+aiosqlite:////tmp/x.db", "sqlite+aiosqlite:////tmp/x.db"),
    ],
)
def test_resolve_url(given: str, expected: str) -> None:
    assert resolve_url(given).render_as_string(hide_password=False) == expected


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("not a url", "not valid"),
        ("mysql://u@db/lockgate", "unsupported database 'mysql'"),
        ("postgresql+psycopg2://u@db/lockgate", "driver 'psycopg2' is not supported"),
        ("postgresql://u@db", "name the database"),
        ("postgresql://u@db/x?sslrootcert=/ca.pem", "unsupported PostgreSQL URL option"),
        ("postgresql://u@db/x?sslmode=sometimes", "ssl/sslmode must be one of"),
        ("sqlite://", "in-memory SQLite is not supported"),
        ("sqlite:///:memory:", "in-memory SQLite is not supported"),
        ("sqlite:////tmp/x.db?mode=ro", "take no options"),
    ],
)
def test_invalid_urls_say_what_is_wrong(given: str, message: str) -> None:
    with pytest.raises(InvalidDatabaseUrl, match=message):
        resolve_url(given)


def test_invalid_url_error_hides_the_password() -> None:
    with pytest.raises(InvalidDatabaseUrl) as caught:
        resolve_url("postgresql://u:hunter2@db")
    assert "hunter2" not in str(caught.value)


def test_default_url_is_a_file_under_data_dir(tmp_path: Path) -> None:
    url = resolve_url(default_url(tmp_path / "data"))
    assert url.database == str(tmp_path / "data" / "lockgate.db")


async def test_sqlite_file_is_private_and_in_wal_mode(tmp_path: Path) -> None:
    engine = create_engine(default_url(tmp_path / "data"))
    try:
        await prepare(engine)
        await prepare(engine)  # idempotent
        async with engine.connect() as conn:
            journal = (await conn.execute(text("PRAGMA journal_mode"))).scalar_one()
            foreign_keys = (await conn.execute(text("PRAGMA foreign_keys"))).scalar_one()
            busy_timeout = (await conn.execute(text("PRAGMA busy_timeout"))).scalar_one()
    finally:
        await engine.dispose()
    assert (journal, foreign_keys) == ("wal", 1)
    assert busy_timeout >= 1000
    mode = stat.S_IMODE((tmp_path / "data" / "lockgate.db").stat().st_mode)
    assert mode == 0o600


async def test_unreachable_postgres_is_store_unavailable() -> None:
    # Port 1 on localhost: connection refused at once.
    with pytest.raises(StoreUnavailable):
        await Store.open("postgresql://postgres@127.0.0.1:1/lockgate", check_schema=False)
