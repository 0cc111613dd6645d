"""Database URLs and engines: the only place that knows which driver backs which URL.

Two backends, one schema: SQLite (the default, a file under ``data_dir``, for a
single replica) and PostgreSQL (for several replicas). Operators write the URL
they know (``postgres://…``, ``postgresql://…``, ``sqlite:///path``); this
module turns it into the asyncio driver URL (asyncpg, aiosqlite) and refuses
anything else with a message that says what would work.

SQLite databases run in WAL mode (readers never block the writer; see
``prepare``); connections enforce foreign keys and wait on a busy timeout; and
SQLAlchemy — not the sqlite3 module — emits ``BEGIN``: write transactions use
``BEGIN IMMEDIATE`` so they take the write lock up front and queue on the busy
timeout, instead of failing with "database is locked" when a deferred
transaction tries to upgrade.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from lockgate.store.errors import InvalidDatabaseUrl

SQLITE_FILE_NAME = "lockgate.db"
SQLITE_BUSY_TIMEOUT_MS = 15_000

# Execution option read by the BEGIN hook: the transaction will write.
WRITE_OPTION = "lockgate_write"

# asyncpg's connect() takes its query-string options as keyword arguments, so only
# these are allowed through (``sslmode`` is libpq's name for asyncpg's ``ssl``).
_POSTGRES_QUERY_KEYS = frozenset(
    {"ssl", "sslmode", "target_session_attrs", "prepared_statement_cache_size"}
)
_SSL_MODES = frozenset({"disable", "allow", "prefer", "require", "verify-ca", "verify-full"})


class Backend(StrEnum):
    SQLITE = "sqlite"
    POSTGRESQL = "postgresql"


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """Per-process pool limits. Each gateway worker process has its own pool, so the
    database sees ``workers x (pool_size + max_overflow)`` connections per replica."""

    pool_size: int = 5
    max_overflow: int = 10
    pool_timeout_s: float = 5.0  # fail fast (503) rather than queue requests behind the pool
    pool_recycle_s: float = 1800.0  # below typical proxy/firewall idle cut-offs
    connect_timeout_s: float = 5.0
    command_timeout_s: float = 30.0


def default_url(data_dir: str | os.PathLike[str]) -> str:
    """The SQLite file used when no database URL is configured: ``<data_dir>/lockgate.db``."""
    path = Path(data_dir).expanduser().resolve() / SQLITE_FILE_NAME
    return f"sqlite+aiosqlite:///{path}"


def resolve_url(url: str | URL) -> URL:
    """Validate ``url`` and return the asyncio-driver URL for it.

    Raises ``InvalidDatabaseUrl`` for anything malformed, in-memory SQLite (each
    pooled connection would see its own empty database), or a backend or driver
    Lockgate does not support.
    """
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as error:
        raise InvalidDatabaseUrl(
            "database URL is not valid; expected postgresql://user@host:5432/dbname "
            "or sqlite:///path/to/lockgate.db"
        ) from error
    backend, _, driver = parsed.drivername.partition("+")
    if backend in ("postgresql", "postgres"):
        return _postgres_url(parsed, driver)
    if backend == "sqlite":
        return _sqlite_url(parsed, driver)
    raise InvalidDatabaseUrl(
        f"unsupported database {backend!r}; use postgresql://… or sqlite:///path"
    )


def backend_of(url: URL) -> Backend:
    return Backend.SQLITE if url.get_backend_name() == "sqlite" else Backend.POSTGRESQL


def safe_url(url: URL) -> str:
    """The URL for logs and error messages: the password masked."""
    return url.render_as_string(hide_password=True)


def _postgres_url(parsed: URL, driver: str) -> URL:
    if driver not in ("", "asyncpg"):
        raise InvalidDatabaseUrl(
            f"PostgreSQL driver {driver!r} is not supported; write postgresql://… "
            "(Lockgate uses asyncpg)"
        )
    if not parsed.database:
        raise InvalidDatabaseUrl(f"{safe_url(parsed)}: name the database, e.g. …:5432/lockgate")
    unknown = sorted(set(parsed.query) - _POSTGRES_QUERY_KEYS)
    if unknown:
        raise InvalidDatabaseUrl(
            f"unsupported PostgreSQL URL option(s) {', '.join(unknown)}; "
            f"supported: {', '.join(sorted(_POSTGRES_QUERY_KEYS))}"
        )
    query = dict(parsed.query)
    if "sslmode" in query:
        query.setdefault("ssl", query.pop("sslmode"))
    ssl = query.get("ssl")
    if ssl is not None and ssl not in _SSL_MODES:
        raise InvalidDatabaseUrl(f"ssl/sslmode must be one of {', '.join(sorted(_SSL_MODES))}")
    return parsed.set(drivername="postgresql+asyncpg", query=query)


def _sqlite_url(parsed: URL, driver: str) -> URL:
    if driver not in ("", "aiosqlite", "pysqlite"):
        raise InvalidDatabaseUrl(f"SQLite driver {driver!r} is not supported; write sqlite:///path")
    if not parsed.database or parsed.database == ":memory:" or parsed.database.startswith("file:"):
        raise InvalidDatabaseUrl(
            "in-memory SQLite is not supported (each connection would see its own database); "
            "give a file path, e.g. sqlite:///var/lib/lockgate/lockgate.db"
        )
    if parsed.query:
        raise InvalidDatabaseUrl("SQLite URLs take no options; Lockgate sets the pragmas itself")
    path = Path(parsed.database).expanduser().resolve()
    return parsed.set(drivername="sqlite+aiosqlite", database=str(path))


def _json_dumps(value: Any) -> str:
    """orjson for JSON columns: the same encoder the audit hash uses, so what is stored
    re-encodes to the bytes that were hashed."""
    return orjson.dumps(value).decode()


def create_engine(url: str | URL, pool: PoolSettings | None = None) -> AsyncEngine:
    """An engine for ``url`` with Lockgate's pool limits, pragmas and BEGIN handling.

    For SQLite the database file (and its directory) is created owner-only if
    missing: it holds key hashes and encrypted upstream credentials.
    """
    resolved = resolve_url(url)
    pool = pool or PoolSettings()
    common: dict[str, Any] = {
        "pool_size": pool.pool_size,
        "max_overflow": pool.max_overflow,
        "pool_timeout": pool.pool_timeout_s,
        "pool_recycle": pool.pool_recycle_s,
        "json_serializer": _json_dumps,
        "json_deserializer": orjson.loads,
    }
    if backend_of(resolved) is Backend.POSTGRESQL:
        return create_async_engine(
            resolved,
            pool_pre_ping=True,  # one round trip per checkout; survives a database restart
            connect_args={
                "timeout": pool.connect_timeout_s,
                "command_timeout": pool.command_timeout_s,
                "server_settings": {"application_name": "lockgate"},
            },
            **common,
        )
    assert resolved.database is not None
    _create_private_file(Path(resolved.database))
    engine = create_async_engine(resolved, **common)
    event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
    event.listen(engine.sync_engine, "begin", _sqlite_on_begin)
    return engine


async def prepare(engine: AsyncEngine) -> None:
    """Put a SQLite database in WAL mode (a no-op for PostgreSQL); ``Store.open`` and
    ``migrate.upgrade`` call it before anything else.

    WAL is a property of the file, so this is needed once, but it has to happen
    outside any transaction, and switching needs the file to itself for a moment:
    SQLite then answers "database is locked" at once, without honouring the busy
    timeout, when another process is using it. Hence a short retry loop here
    rather than a PRAGMA in the per-connection hook.
    """
    if engine.dialect.name != "sqlite":
        return
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            async with engine.connect() as conn:
                # The aiosqlite connection itself: through SQLAlchemy, BEGIN would come first.
                driver: Any = (await conn.get_raw_connection()).driver_connection
                cursor = await driver.execute("PRAGMA journal_mode = WAL")
                row = await cursor.fetchone()
                await cursor.close()
            if row is not None and str(row[0]).lower() == "wal":
                return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.02)


def _create_private_file(path: Path) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not path.exists():
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
        os.close(fd)


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Take BEGIN away from the sqlite3 module (see _sqlite_on_begin).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA synchronous = FULL")  # audit entries must survive power loss
    finally:
        cursor.close()


def _sqlite_on_begin(connection: Connection) -> None:
    is_write = bool(connection.get_execution_options().get(WRITE_OPTION, False))
    connection.exec_driver_sql("BEGIN IMMEDIATE" if is_write else "BEGIN")
