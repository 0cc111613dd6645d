"""Which schema revision a database is at, without loading Alembic.

A serving process only needs to *check* the revision; migrating (and the
~40 MiB Alembic brings) happens in ``migrate``, before workers start.
``HEAD_REVISION`` is checked against the migration scripts by a test.
"""

from __future__ import annotations

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

HEAD_REVISION = "0009_prompt_logging"


def revision_of(connection: Connection) -> str | None:
    """The revision recorded in the database behind ``connection`` (None: never migrated)."""
    if not inspect(connection).has_table("alembic_version"):
        return None
    row = connection.execute(text("SELECT version_num FROM alembic_version")).first()
    return None if row is None else str(row[0])
