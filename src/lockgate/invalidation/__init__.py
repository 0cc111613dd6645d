"""Cache invalidation across gateway processes: ``publish(topic, key)`` drops the entry everywhere.

Read ``bus.py`` for the contract, ``build.py`` for which transport a
deployment gets, and ``listening.py`` for the reconnect semantics the
networked buses share.

The networked transports are imported on first use (PEP 562): a gateway that
never talks to Redis or PostgreSQL does not carry their client libraries.
"""

import importlib
from typing import TYPE_CHECKING

from lockgate.invalidation.build import build_bus
from lockgate.invalidation.bus import (
    MAX_KEY_BYTES,
    InvalidationBus,
    InvalidationUnavailable,
    KeyHandler,
    ReconnectHandler,
)
from lockgate.invalidation.inprocess import InProcessBus
from lockgate.invalidation.listening import Backoff

if TYPE_CHECKING:
    from lockgate.invalidation.postgres_bus import PostgresBus
    from lockgate.invalidation.redis_bus import RedisBus
    from lockgate.invalidation.sqlite_bus import SqliteBus

_LAZY = {
    "PostgresBus": "lockgate.invalidation.postgres_bus",
    "RedisBus": "lockgate.invalidation.redis_bus",
    "SqliteBus": "lockgate.invalidation.sqlite_bus",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "MAX_KEY_BYTES",
    "Backoff",
    "InProcessBus",
    "InvalidationBus",
    "InvalidationUnavailable",
    "KeyHandler",
    "PostgresBus",
    "ReconnectHandler",
    "RedisBus",
    "SqliteBus",
    "build_bus",
]
