"""``PostgresBus``: invalidation through PostgreSQL LISTEN/NOTIFY.

Why: a deployment that already runs PostgreSQL (scale-out without Redis, or
embedded multi-worker on PostgreSQL) gets push delivery without another
server. NOTIFY is delivered to every session LISTENing on the channel when the
notifying transaction commits; PostgreSQL keeps no backlog for sessions that
were away, which is why a reconnect flushes (``on_reconnect``).

Messages are ``[origin, topic, key]`` as JSON text on one channel (default
``lockgate_invalidation``). ``check_message`` bounds them far below NOTIFY's
8000-byte payload limit, and a notification queue that fills up (8 GB by
default, only if a listener stops reading) makes NOTIFY fail, which
``publish`` reports as ``InvalidationUnavailable``.

Connections: one LISTENing connection and one for ``pg_notify`` (serialised:
an asyncpg connection runs one query at a time), named
``lockgate-invalidation-{listen,publish}-<instance_id>`` in
``pg_stat_activity``. asyncpg calls a termination listener as soon as the
server closes the connection (``pg_terminate_backend``, a restart); for a
silent network loss the listener runs ``SELECT 1`` after ``ping_interval_s``.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import asyncpg

from lockgate.invalidation.bus import decode_message, encode_message, log
from lockgate.invalidation.listening import Backoff, ListeningBus

_CHANNEL = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class PostgresBus(ListeningBus):
    """Invalidation through LISTEN/NOTIFY; ``dsn`` is a libpq URL (``postgresql://...``)."""

    kind = "postgres"

    def __init__(
        self,
        dsn: str,
        channel: str = "lockgate_invalidation",
        *,
        ping_interval_s: float = 5.0,
        connect_timeout_s: float = 5.0,
        publish_timeout_s: float = 2.0,
        backoff: Backoff | None = None,
    ) -> None:
        if not _CHANNEL.fullmatch(channel):
            raise ValueError(f"invalid channel {channel!r}: use [a-z_][a-z0-9_]{{0,62}}")
        super().__init__(
            connect_timeout_s=connect_timeout_s,
            publish_timeout_s=publish_timeout_s,
            backoff=backoff,
        )
        self.channel = channel
        self._dsn = dsn
        self._ping_interval_s = ping_interval_s
        self._listener: Any = None  # asyncpg.Connection (asyncpg ships no types)
        self._listener_lost = asyncio.Event()
        self._publisher: Any = None

    async def _connect(self, role: str) -> Any:
        return await asyncpg.connect(
            self._dsn,
            timeout=self._connect_timeout_s,
            server_settings={
                "application_name": f"lockgate-invalidation-{role}-{self.instance_id}"
            },
        )

    # -- listener ----------------------------------------------------------------
    async def _open_listener(self) -> None:
        # A fresh event per connection: a late callback from the old one must
        # not end the new connection's watch.
        self._listener_lost = lost = asyncio.Event()
        self._listener = connection = await self._connect("listen")
        connection.add_termination_listener(lambda _connection: lost.set())
        await connection.add_listener(self.channel, self._on_notify)

    async def _listen(self) -> None:
        connection, lost = self._listener, self._listener_lost
        assert connection is not None
        while not lost.is_set():
            try:
                await asyncio.wait_for(lost.wait(), self._ping_interval_s)
            except TimeoutError:
                await connection.execute("SELECT 1", timeout=self._ping_interval_s)
        raise ConnectionError("PostgreSQL closed the listening connection")

    def _on_notify(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            origin, topic, key = decode_message(payload)
        except ValueError as exc:
            log.warning(
                "postgres bus: ignoring a foreign notification on %s: %s", self.channel, exc
            )
            return
        self._received(origin, topic, key)

    async def _close_listener(self) -> None:
        connection, self._listener = self._listener, None
        await _close(connection)

    # -- publisher ---------------------------------------------------------------
    async def _send(self, topic: str, key: str) -> None:
        if self._publisher is None or self._publisher.is_closed():
            self._publisher = await self._connect("publish")
        payload = encode_message(self.instance_id, topic, key).decode()
        await self._publisher.execute(
            "SELECT pg_notify($1, $2)", self.channel, payload, timeout=self._publish_timeout_s
        )

    async def _close_publisher(self) -> None:
        connection, self._publisher = self._publisher, None
        await _close(connection)


async def _close(connection: Any) -> None:
    """Close politely if the connection still works, else just drop the socket."""
    if connection is None or connection.is_closed():
        return
    try:
        await connection.close(timeout=1.0)
    except Exception:
        connection.terminate()
