"""Schema migrations, run from code at start-up: ``await upgrade(url)``.

Safe to call on every start of every replica: it is idempotent (at head it does
nothing), and concurrent callers are serialised on the database itself —
PostgreSQL: ``pg_advisory_xact_lock`` taken at the start of the migration
transaction (DDL is transactional there, so a replica that waited sees the
finished schema, and the lock goes away with the transaction even if the process
dies); SQLite: the whole upgrade is one ``BEGIN IMMEDIATE`` transaction, which
holds the database's single write lock.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import URL, Connection

from lockgate.store.database import WRITE_OPTION, PoolSettings, create_engine, prepare
from lockgate.store.errors import StoreError, translated

# sha256("lockgate.store.migrate")[:8] as a signed 64-bit integer: one lock, every replica.
MIGRATION_LOCK_KEY = 4742934407111177376

_SCRIPT_LOCATION = Path(__file__).with_name("migrations")
_ONE_CONNECTION = PoolSettings(pool_size=1, max_overflow=0)


def alembic_config() -> Config:
    """An Alembic config pointing at the packaged migrations (no alembic.ini needed)."""
    config = Config()
    config.set_main_option("script_location", str(_SCRIPT_LOCATION))
    return config


def head_revision() -> str:
    """The revision this version of Lockgate expects the database to be at."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "the packaged migrations have no head"
    return head


async def upgrade(url: str | URL, revision: str = "head") -> None:
    """Bring the database at ``url`` up to ``revision`` (default: head).

    Raises ``InvalidDatabaseUrl``, ``StoreUnavailable`` or ``StoreError``; on
    failure the migration transaction is rolled back and the schema is unchanged.
    """
    engine = create_engine(url, _ONE_CONNECTION)
    try:
        with translated():
            await prepare(engine)
            async with engine.connect() as connection:
                await connection.execution_options(**{WRITE_OPTION: True})
                await connection.run_sync(_upgrade_locked, revision)
    except StoreError:
        raise
    except Exception as error:  # Alembic's own errors (unknown revision, bad script)
        raise StoreError(f"migration failed: {error}") from error
    finally:
        await engine.dispose()


async def current_revision(url: str | URL) -> str | None:
    """The revision the database is at, or None if it has never been migrated."""
    engine = create_engine(url, _ONE_CONNECTION)
    try:
        with translated():
            async with engine.connect() as connection:
                return await connection.run_sync(revision_of)
    finally:
        await engine.dispose()


def _upgrade_locked(connection: Connection, revision: str) -> None:
    with connection.begin():  # SQLite: BEGIN IMMEDIATE (WRITE_OPTION)
        if connection.dialect.name == "postgresql":
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
            )
        config = alembic_config()
        # Alembic sees a transaction already open and runs inside it (no commit of its own).
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def revision_of(connection: Connection) -> str | None:
    """The revision recorded in the database behind ``connection`` (None: never migrated)."""
    return MigrationContext.configure(connection).get_current_revision()


def _main() -> int:
    """``python -m lockgate.store.migrate`` with the database URL on stdin.

    ``lockgate serve`` migrates this way, in a throwaway process, so that its
    long-lived processes never load Alembic (tens of MiB per worker, and more
    for the GC to walk). The URL comes on stdin so a password never shows in
    the process list.
    """
    import asyncio
    import sys

    try:
        asyncio.run(upgrade(sys.stdin.read().strip()))
    except StoreError as error:
        print(error, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
