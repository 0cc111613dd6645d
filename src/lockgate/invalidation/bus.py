"""The ``InvalidationBus`` contract, its one error, and the parts every implementation shares.

Why a bus: each gateway process caches API keys (later limits and routing
config) so authentication costs no database round trip. When an admin revokes
or rotates a key, every process on every replica must drop its copy within a
second. The bus carries only *which* entry changed (a topic such as ``"keys"``
and a key), never the new value: a process drops the entry and re-reads the
store on its next miss. So a duplicated message costs one cache miss, and a
lost one is made safe by ``on_reconnect`` (flush everything). Delivery is
at-least-once while connected and "flush instead" across a lost connection.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Protocol

import orjson

from lockgate.errors import GatewayError

log = logging.getLogger("lockgate.invalidation")

KeyHandler = Callable[[str], None]
ReconnectHandler = Callable[[], None]

# Bounded so every message fits any transport: PostgreSQL NOTIFY payloads must
# stay under 8000 bytes, and a bus message should never be a bulk data channel.
MAX_KEY_BYTES = 512
_TOPIC = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


class InvalidationUnavailable(GatewayError):
    """An invalidation could not be sent to the other processes (or a bus could not start).

    Raised by ``publish`` so the caller, typically an admin API request that
    revoked a key, knows the other processes may still hold the old entry and
    can answer 503 and retry, instead of reporting a success that is not one.
    """

    status = 503
    code = "invalidation_unavailable"


class InvalidationBus(Protocol):
    """Tells every gateway process, this one included, to drop cached entries.

    Lifecycle: build one per process (after any fork), register handlers with
    ``subscribe``/``on_reconnect``, ``await start()``, and ``await close()`` at
    shutdown; ``close`` cancels and awaits every task the bus owns.

    Ordering: call ``publish`` *after* the store change has committed. A
    process that drops its entry earlier could re-read the old row and cache
    it again, and no second message would come to drop it.
    """

    async def start(self) -> None:
        """Connect and subscribe; when it returns, messages published anywhere are received.

        Raises ``InvalidationUnavailable`` if the transport cannot be reached:
        a process must not serve from caches it cannot invalidate.
        """

    async def close(self) -> None:
        """Stop listening and release connections; idempotent. No task outlives it."""

    async def publish(self, topic: str, key: str) -> None:
        """Drop ``key`` under ``topic`` in every process, this one included.

        This process's handlers run before ``publish`` returns; the other
        processes receive it within a second. Raises ``InvalidationUnavailable``
        if the message could not be handed to the transport, and ``ValueError``
        for a topic outside ``[A-Za-z0-9_.:-]{1,64}`` or a key over
        ``MAX_KEY_BYTES`` UTF-8 bytes (a programming error).
        """

    def subscribe(self, topic: str, handler: KeyHandler) -> None:
        """Call ``handler(key)`` for every message on ``topic``, on the event loop thread.

        Handlers must be synchronous, cheap and idempotent: they drop cache
        entries and nothing else. A handler that raises is logged and skipped.
        """

    def on_reconnect(self, handler: ReconnectHandler) -> None:
        """Call ``handler()`` whenever messages may have been missed: flush the whole cache.

        Called after every reconnect, once the bus is subscribed again (so
        nothing published after the flush is missed), and whenever a bus
        detects a gap in its message stream. Never called for the first
        connection made by ``start``: caches are empty then.
        """


def check_message(topic: str, key: str) -> None:
    """Raise ``ValueError`` unless ``topic`` and ``key`` fit every transport."""
    check_topic(topic)
    if len(key.encode()) > MAX_KEY_BYTES:
        raise ValueError(f"invalidation key is over {MAX_KEY_BYTES} bytes")


def check_topic(topic: str) -> None:
    if not _TOPIC.fullmatch(topic):
        raise ValueError(f"invalid invalidation topic {topic!r}: use [A-Za-z0-9_.:-]{{1,64}}")


def encode_message(origin: str, topic: str, key: str) -> bytes:
    """The wire form used by the Redis and PostgreSQL buses: a JSON array."""
    return orjson.dumps([origin, topic, key])


def decode_message(payload: bytes | str) -> tuple[str, str, str]:
    """``(origin, topic, key)`` from ``encode_message``'s output; ``ValueError`` if foreign."""
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise ValueError("invalidation message is not JSON") from exc
    if not (isinstance(value, list) and len(value) == 3 and all(isinstance(v, str) for v in value)):
        raise ValueError("invalidation message is not [origin, topic, key]")
    origin, topic, key = value
    return origin, topic, key


class Subscriptions:
    """Topic handlers and reconnect handlers of one bus, and the one place that calls them."""

    def __init__(self) -> None:
        self._handlers: dict[str, list[KeyHandler]] = {}
        self._reconnect_handlers: list[ReconnectHandler] = []

    def add(self, topic: str, handler: KeyHandler) -> None:
        check_topic(topic)
        self._handlers.setdefault(topic, []).append(handler)

    def add_reconnect(self, handler: ReconnectHandler) -> None:
        self._reconnect_handlers.append(handler)

    def deliver(self, topic: str, key: str) -> None:
        # A failing handler must neither stop the others nor kill a listener task.
        for handler in tuple(self._handlers.get(topic, ())):
            try:
                handler(key)
            except Exception:
                log.exception("invalidation handler for topic %r failed", topic)

    def reconnected(self) -> None:
        for handler in tuple(self._reconnect_handlers):
            try:
                handler()
            except Exception:
                log.exception("invalidation reconnect handler failed")
