"""``build_bus`` picks the transport from what the deployment already configures."""

from __future__ import annotations

from pathlib import Path

import pytest

from lockgate.invalidation import PostgresBus, RedisBus, SqliteBus, build_bus


def test_redis_wins_when_configured(tmp_path: Path) -> None:
    bus = build_bus("redis://cache:6379/0", "postgresql://db/lockgate", str(tmp_path))
    assert isinstance(bus, RedisBus)
    assert bus.channel == "lockgate:invalidation"


@pytest.mark.parametrize(
    "database_url",
    [
        "postgresql://u@db:5432/lockgate",
        "postgres://u@db/lockgate",
        "postgresql+asyncpg://u@db/lockgate?ssl=require",
        "POSTGRESQL+psycopg://u@db/lockgate",
    ],
)
def test_postgres_without_redis(database_url: str, tmp_path: Path) -> None:
    bus = build_bus(None, database_url, str(tmp_path))
    assert isinstance(bus, PostgresBus)
    assert bus._dsn.startswith("postgresql://u@db")
    assert "+" not in bus._dsn.partition("://")[0]


@pytest.mark.parametrize("database_url", [None, "", "sqlite+aiosqlite:///var/lib/lockgate/db"])
def test_embedded_shares_a_file_in_the_data_dir_with_operator_commands(
    database_url: str | None, tmp_path: Path
) -> None:
    """Even one worker: `lockgate keys revoke` is another process on the same machine."""
    bus = build_bus("", database_url, str(tmp_path))
    assert isinstance(bus, SqliteBus)
    assert bus.path == str(tmp_path / "invalidation.sqlite3")


def test_postgres_channel_names_are_checked() -> None:
    with pytest.raises(ValueError, match="invalid channel"):
        PostgresBus("postgresql://db", channel="Bad-Channel")
