"""``build_bus``: pick the invalidation transport a deployment already has.

The choice follows what is configured, never a separate setting, so a
deployment cannot end up with replicas that do not hear each other:

1. ``redis_url`` set -> ``RedisBus``: scale-out replicas share Redis, and pub/sub
   is the cheapest push (PostgreSQL is then left to the store).
2. else a PostgreSQL ``database_url`` -> ``PostgresBus``: every process that
   shares the database hears LISTEN/NOTIFY, on one machine or many.
3. else (embedded SQLite) -> ``SqliteBus`` on ``<data_dir>/invalidation.sqlite3``,
   shared by the workers of this machine *and* by operator commands
   (``lockgate keys revoke`` runs in a process of its own), even with one worker.

``InProcessBus`` is for tests and single-process tools that own every cache.
"""

from __future__ import annotations

import os

from lockgate.invalidation.bus import InvalidationBus

SQLITE_BUS_FILE = "invalidation.sqlite3"


def build_bus(redis_url: str | None, database_url: str | None, data_dir: str) -> InvalidationBus:
    """The bus for this deployment (see the module docstring); not started.

    Call it in each worker process after any fork, then ``await bus.start()``.
    ``database_url`` may carry a SQLAlchemy driver (``postgresql+asyncpg://``);
    it is reduced to the libpq form asyncpg expects.
    """
    # Imported per branch: each transport's client library costs 10-20 MiB per process.
    if redis_url:
        from lockgate.invalidation.redis_bus import RedisBus

        return RedisBus(redis_url)
    postgres_dsn = _postgres_dsn(database_url)
    if postgres_dsn is not None:
        from lockgate.invalidation.postgres_bus import PostgresBus

        return PostgresBus(postgres_dsn)
    from lockgate.invalidation.sqlite_bus import SqliteBus

    return SqliteBus(os.path.join(data_dir, SQLITE_BUS_FILE))


def _postgres_dsn(database_url: str | None) -> str | None:
    """``postgresql://...`` for a PostgreSQL URL in any driver spelling, else ``None``."""
    if not database_url:
        return None
    scheme, separator, rest = database_url.partition("://")
    if not separator or scheme.lower().partition("+")[0] not in ("postgresql", "postgres"):
        return None
    return f"postgresql://{rest}"
