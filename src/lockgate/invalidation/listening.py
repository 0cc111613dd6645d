"""``ListeningBus``: the lifecycle shared by the buses whose listener can lose its connection.

Redis, PostgreSQL and the SQLite poller differ only in how they open a
listener, wait on it and send a message; the hard parts are the same and live
here once:

- one owned listener task, cancelled and awaited by ``close``;
- a lost listener is reopened with jittered exponential back-off (so replicas
  do not reconnect in lock-step after an outage), and only once it is
  subscribed again are the ``on_reconnect`` handlers called: a flush made
  before resubscribing could miss a message sent in between;
- ``publish`` runs this process's handlers itself, then sends; the listener
  skips messages carrying its own ``instance_id``, so each process gets each
  message once, and without waiting on the server;
- publishing is bounded in time, retried once on a fresh connection (a restart
  of the server leaves a stale one behind; a duplicate invalidation is
  harmless), and otherwise raises ``InvalidationUnavailable``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from lockgate.invalidation.bus import (
    InvalidationUnavailable,
    KeyHandler,
    ReconnectHandler,
    Subscriptions,
    check_message,
)

log = logging.getLogger("lockgate.invalidation")


@dataclass
class Backoff:
    """Delays between reconnect attempts: doubling from ``initial_s`` up to ``max_s``, jittered."""

    initial_s: float = 0.1
    max_s: float = 5.0
    _next_s: float = field(init=False, default=0.0)
    _random: secrets.SystemRandom = field(init=False, default_factory=secrets.SystemRandom)

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._next_s = self.initial_s

    def next_delay_s(self) -> float:
        delay_s = self._next_s
        self._next_s = min(self.max_s, delay_s * 2)
        return delay_s / 2 + self._random.uniform(0, delay_s / 2)


def describe(exc: BaseException) -> str:
    """``Type: message`` for logs and errors (some client libraries' reprs drop the message)."""
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


class ListeningBus(ABC):
    """Base of the networked buses; subclasses implement the five transport hooks below."""

    kind = "bus"

    def __init__(
        self,
        *,
        connect_timeout_s: float = 5.0,
        publish_timeout_s: float = 2.0,
        backoff: Backoff | None = None,
    ) -> None:
        # Names this process's connections (Redis client name, PostgreSQL
        # application_name) so an operator can find them, and marks its messages.
        self.instance_id = secrets.token_hex(8)
        self._connect_timeout_s = connect_timeout_s
        self._publish_timeout_s = publish_timeout_s
        self._backoff = backoff if backoff is not None else Backoff()
        self._subscriptions = Subscriptions()
        self._publish_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    # -- the contract ----------------------------------------------------------
    def subscribe(self, topic: str, handler: KeyHandler) -> None:
        self._subscriptions.add(topic, handler)

    def on_reconnect(self, handler: ReconnectHandler) -> None:
        self._subscriptions.add_reconnect(handler)

    async def start(self) -> None:
        if self._task is not None:
            return
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                await self._open_listener()
        except Exception as exc:
            await self._drop_listener()
            message = f"{self.kind} bus cannot listen: {describe(exc)}"
            raise InvalidationUnavailable(message) from exc
        self._task = asyncio.create_task(
            self._keep_listening(), name=f"lockgate-invalidation-{self.kind}"
        )

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            # wait() rather than awaiting the task: a cancellation of close()
            # itself must still propagate to our caller.
            await asyncio.wait([task])
        await self._drop_listener()
        async with self._publish_lock:
            await self._drop_publisher()

    async def publish(self, topic: str, key: str) -> None:
        check_message(topic, key)
        # Dropping an entry is always safe, so this process never waits on the server.
        self._subscriptions.deliver(topic, key)
        try:
            async with asyncio.timeout(self._publish_timeout_s), self._publish_lock:
                try:
                    await self._send_or_drop(topic, key)
                except Exception as exc:
                    log.info("%s bus: publish failed (%s); retrying once", self.kind, describe(exc))
                    await self._send_or_drop(topic, key)
        except Exception as exc:
            raise InvalidationUnavailable(
                # Not the key: error bodies reach API clients and logs.
                f"invalidation on topic {topic!r} was not sent ({self.kind}): {describe(exc)}"
            ) from exc

    async def _send_or_drop(self, topic: str, key: str) -> None:
        try:
            await self._send(topic, key)
        except BaseException:
            # A failed or cancelled (timed out) send may leave the connection
            # mid-command: never reuse it.
            await self._drop_publisher()
            raise

    # -- for subclasses --------------------------------------------------------
    def _received(self, origin: str, topic: str, key: str) -> None:
        """Deliver a message from the transport unless this bus published it."""
        if origin != self.instance_id:
            self._subscriptions.deliver(topic, key)

    def _missed_messages(self) -> None:
        """Tell subscribers to flush: the transport reports that messages were lost."""
        log.warning("%s bus: messages may have been missed; flushing caches", self.kind)
        self._subscriptions.reconnected()

    @abstractmethod
    async def _open_listener(self) -> None:
        """Connect and subscribe; return only once messages are being received."""

    @abstractmethod
    async def _listen(self) -> None:
        """Receive until the listener is lost, then raise (the reason is logged)."""

    @abstractmethod
    async def _close_listener(self) -> None:
        """Release the listener's connection, working or not (errors are logged)."""

    @abstractmethod
    async def _send(self, topic: str, key: str) -> None:
        """Hand one message to the transport, opening the publisher connection if needed."""

    @abstractmethod
    async def _close_publisher(self) -> None:
        """Release the publisher connection, working or not (errors are logged)."""

    async def _drop_listener(self) -> None:
        try:
            await self._close_listener()
        except Exception:
            log.exception("%s bus: closing the listener failed", self.kind)

    async def _drop_publisher(self) -> None:
        try:
            await self._close_publisher()
        except Exception:
            log.exception("%s bus: closing the publisher failed", self.kind)

    # -- the listener task -----------------------------------------------------
    async def _keep_listening(self) -> None:
        while True:
            try:
                await self._listen()
                reason = "listener stopped"
            except Exception as exc:
                reason = describe(exc)
            log.warning("%s bus: listener lost (%s); reconnecting", self.kind, reason)
            await self._drop_listener()
            await self._reopen_listener()
            log.info("%s bus: listening again; flushing caches", self.kind)
            self._subscriptions.reconnected()

    async def _reopen_listener(self) -> None:
        self._backoff.reset()
        while True:
            await asyncio.sleep(self._backoff.next_delay_s())
            try:
                async with asyncio.timeout(self._connect_timeout_s):
                    await self._open_listener()
            except Exception as exc:
                log.warning("%s bus: reconnect failed: %s", self.kind, describe(exc))
                await self._drop_listener()
            else:
                return
