"""The store's exception tree: what callers catch instead of driver errors.

Every failure that leaves ``lockgate.store`` is a ``StoreError``; SQLAlchemy,
asyncpg and sqlite3 exceptions are translated at the boundary (``translated``),
so the admin API and the data plane depend on this module only. The admin API
maps ``NotFound`` to 404, ``Conflict`` to 409, ``Invalid`` to 400 and
``StoreUnavailable`` to 503.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum

from sqlalchemy import exc as sa_exc


class StoreError(Exception):
    """Base of every error raised by ``lockgate.store``."""


class InvalidDatabaseUrl(StoreError, ValueError):
    """The configured database URL is malformed or names an unsupported backend."""


class NotFound(StoreError):
    """No such object — or it belongs to another organisation (indistinguishable on purpose)."""


class ConflictReason(StrEnum):
    DUPLICATE = "duplicate"  # a unique constraint: name, email, key id …
    REFERENCE = "reference"  # a foreign key: a parent is missing, or a child still refers to it


class Conflict(StoreError):
    """The write contradicts what is stored: a duplicate, or a dangling/remaining reference."""

    def __init__(self, message: str, *, reason: ConflictReason) -> None:
        super().__init__(message)
        self.reason = reason


class Invalid(StoreError, ValueError):
    """The values break a schema rule (a CHECK constraint, or JSON that cannot be stored)."""


class StoreUnavailable(StoreError):
    """The database cannot be reached or did not answer in time; retrying later may succeed."""


def _sqlstate(error: sa_exc.DBAPIError) -> str | None:
    """PostgreSQL's SQLSTATE, or a SQLite extended error name, from the driver exception."""
    orig = error.orig
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if code is None:
        code = getattr(orig, "sqlite_errorname", None)
    return str(code) if code is not None else None


def _is_unavailable(error: sa_exc.DBAPIError) -> bool:
    """Connection trouble and lock timeouts, as opposed to a bug such as a missing table."""
    if isinstance(error, sa_exc.InterfaceError):
        return True
    if not isinstance(error, sa_exc.OperationalError):
        return False
    text = str(error.orig).lower()
    return not any(bug in text for bug in ("no such table", "no such column", "syntax error"))


def from_integrity_error(error: sa_exc.IntegrityError) -> StoreError:
    """Classify a constraint violation; the message never echoes stored values."""
    code = _sqlstate(error) or ""
    text = str(error.orig).lower()
    if code in ("23505", "SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY"):
        return Conflict(
            "an object with that identity already exists", reason=ConflictReason.DUPLICATE
        )
    if code in ("23503", "SQLITE_CONSTRAINT_FOREIGNKEY") or "foreign key" in text:
        return Conflict(
            "a referenced object is missing, or other objects still refer to this one",
            reason=ConflictReason.REFERENCE,
        )
    if "unique" in text or "duplicate" in text:
        return Conflict(
            "an object with that identity already exists", reason=ConflictReason.DUPLICATE
        )
    return Invalid("the values break a schema rule")


@contextmanager
def translated() -> Iterator[None]:
    """Turn driver and SQLAlchemy exceptions raised inside the block into ``StoreError``s."""
    try:
        yield
    except StoreError:
        raise
    except sa_exc.IntegrityError as error:
        raise from_integrity_error(error) from error
    except sa_exc.TimeoutError as error:  # the connection pool is exhausted
        raise StoreUnavailable("no database connection became free in time") from error
    except sa_exc.DBAPIError as error:
        if error.connection_invalidated or _is_unavailable(error):
            raise StoreUnavailable(f"database unavailable: {error.orig}") from error
        raise StoreError(f"database error: {error.orig}") from error
    except sa_exc.StatementError as error:  # a bind value refused before reaching the driver
        if isinstance(error.orig, ValueError):
            raise Invalid(str(error.orig)) from error
        raise StoreError(f"database error: {error.orig}") from error
    except sa_exc.SQLAlchemyError as error:
        raise StoreError(f"database error: {error}") from error
    except sqlite3.OperationalError as error:  # from the raw driver, see database.prepare
        raise StoreUnavailable(f"database unavailable: {error}") from error
    except (OSError, TimeoutError) as error:  # asyncpg raises these while connecting
        raise StoreUnavailable(f"database unavailable: {error}") from error
