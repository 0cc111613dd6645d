"""``lockgate.store``: the only package that speaks SQL.

It persists the tenancy records of ``lockgate.tenancy.model`` (plus encrypted
upstream secrets) in SQLite or PostgreSQL, hands them back as those frozen
records, and raises only ``lockgate.store.errors`` exceptions. Start-up does
``await upgrade(url)`` then ``store = await Store.open(url)``.

The migration functions are loaded on first use (PEP 562): serving processes
check the schema revision but never migrate, and Alembic is large.
"""

import importlib
from typing import TYPE_CHECKING

from lockgate.store.database import PoolSettings, default_url, resolve_url
from lockgate.store.errors import (
    Conflict,
    ConflictReason,
    Invalid,
    InvalidDatabaseUrl,
    NotFound,
    StoreError,
    StoreUnavailable,
)
from lockgate.store.repositories import UpstreamSecret
from lockgate.store.repositories.base import UNSET
from lockgate.store.store import Store, Transaction

if TYPE_CHECKING:
    from lockgate.store.migrate import current_revision, head_revision, upgrade

_MIGRATE = frozenset({"current_revision", "head_revision", "upgrade"})


def __getattr__(name: str) -> object:
    if name not in _MIGRATE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module("lockgate.store.migrate"), name)


__all__ = [
    "UNSET",
    "Conflict",
    "ConflictReason",
    "Invalid",
    "InvalidDatabaseUrl",
    "NotFound",
    "PoolSettings",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "Transaction",
    "UpstreamSecret",
    "current_revision",
    "default_url",
    "head_revision",
    "resolve_url",
    "upgrade",
]
