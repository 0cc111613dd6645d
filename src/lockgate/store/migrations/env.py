"""Alembic environment: runs on the connection ``lockgate.store.migrate`` hands over.

``migrate.upgrade`` opens the connection, begins the transaction and takes the
cross-replica lock before calling Alembic, so this module only configures the
context. Offline mode (``--sql``) is supported for operators who review DDL.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from lockgate.store.schema import metadata


def _run_offline() -> None:
    context.configure(
        url=context.config.get_main_option("sqlalchemy.url"),
        target_metadata=metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_online(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds tables in later revisions.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    _run_offline()
else:
    _run_online(context.config.attributes["connection"])
