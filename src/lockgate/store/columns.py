"""Column types that behave the same on SQLite and PostgreSQL, and the store's ids.

Timestamps: PostgreSQL keeps ``timestamptz`` (microsecond precision). SQLite has no
date type, so they are stored as fixed-width ISO-8601 text in UTC
(``2024-05-01T12:00:00.000000+00:00``, always 32 characters): readable in the
sqlite3 shell, exact to the microsecond (the audit hash covers ``at``), and
ordered correctly by plain text comparison. Both come back as aware UTC
datetimes; naive datetimes are refused rather than guessed at.
"""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Dialect, String
from sqlalchemy.types import TypeDecorator, TypeEngine

from lockgate.store.errors import Invalid

# Crockford's base32 in ASCII order, so ids sort like the numbers they encode.
_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def new_id(prefix: str) -> str:
    """``<prefix>_`` + 20 characters: 50 bits of milliseconds, then 50 random bits.

    Time first makes ids sort by creation, so listing by id (the keyset cursor
    every list method uses) is chronological without a second index.
    """
    value = (time.time_ns() // 1_000_000) << 50 | secrets.randbits(50)
    chars = []
    for _ in range(20):
        value, digit = divmod(value, 32)
        chars.append(_ALPHABET[digit])
    return f"{prefix}_{''.join(reversed(chars))}"


def utc_now() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """Aware → UTC; naive is a programming error (whose clock would it be?)."""
    if value.tzinfo is UTC:  # what the ledger writes: skip the conversion (flusher hot path)
        return value
    if value.tzinfo is None or value.utcoffset() is None:
        raise Invalid("timestamps must be timezone-aware")
    return value.astimezone(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime, stored exactly (see the module docstring)."""

    impl = String(32)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(DateTime(timezone=True))
        return dialect.type_descriptor(String(32))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        utc = as_utc(value)
        if dialect.name == "postgresql":
            return utc
        return utc.isoformat(timespec="microseconds")

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        assert isinstance(value, datetime)
        return as_utc(value)


def json_column() -> JSON:
    """JSON as text on both backends (not JSONB): stored byte-for-byte as encoded, which
    the audit chain relies on, and nothing here is queried inside."""
    return JSON(none_as_null=True)
