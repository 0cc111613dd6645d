"""``RedisBus``: invalidation across replicas through Redis pub/sub.

Why pub/sub: delivery is a push (sub-millisecond on a LAN) and Redis keeps no
backlog, which suits messages that only matter to processes running now; a
process that was away flushes instead (``on_reconnect``). All topics share one
channel, ``<channel_prefix>invalidation``, carrying ``[origin, topic, key]``:
``subscribe`` is synchronous and may be called after ``start``, which a
channel per topic would turn into a SUBSCRIBE round trip, and invalidations
are rare enough that filtering topics in the process costs nothing.

Connections: one for publishing (admin-rate traffic, serialised) and one
subscribed connection read by the owned listener task. Both are named
``lockgate-invalidation-{publish,listen}-<instance_id>`` in ``CLIENT LIST``.
redis-py gets no retries: its retry path reconnects and resubscribes
silently, hiding exactly the gap subscribers must hear about; the listener
task reconnects instead and calls ``on_reconnect``.
A pub/sub connection can die without a TCP error (a partition), so the
listener PINGs after ``ping_interval_s`` of silence and reconnects if the
answer does not come within another interval.
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from lockgate.invalidation.bus import decode_message, encode_message, log
from lockgate.invalidation.listening import Backoff, ListeningBus


class RedisBus(ListeningBus):
    """Invalidation through Redis pub/sub; see the module docstring for the design."""

    kind = "redis"

    def __init__(
        self,
        url: str,
        channel_prefix: str = "lockgate:",
        *,
        ping_interval_s: float = 5.0,
        connect_timeout_s: float = 5.0,
        publish_timeout_s: float = 2.0,
        backoff: Backoff | None = None,
    ) -> None:
        super().__init__(
            connect_timeout_s=connect_timeout_s,
            publish_timeout_s=publish_timeout_s,
            backoff=backoff,
        )
        self.channel = f"{channel_prefix}invalidation"
        self._url = url
        self._ping_interval_s = ping_interval_s
        self._listener: Redis | None = None
        self._pubsub: PubSub | None = None
        self._publisher: Redis | None = None

    def _client(self, role: str, *, socket_timeout_s: float | None = None) -> Redis:
        return Redis.from_url(
            self._url,
            client_name=f"lockgate-invalidation-{role}-{self.instance_id}",
            socket_connect_timeout=self._connect_timeout_s,
            socket_timeout=socket_timeout_s,
            socket_keepalive=True,
            retry=Retry(NoBackoff(), 0),
            # The publisher is one connection, not a pool: publishes are serialised anyway.
            single_connection_client=role == "publish",
        )

    # -- listener ----------------------------------------------------------------
    async def _open_listener(self) -> None:
        self._listener = self._client("listen")
        self._pubsub = pubsub = self._listener.pubsub()
        await pubsub.subscribe(self.channel)
        # SUBSCRIBE is active once Redis confirms it; start() promises that.
        while True:
            message = await pubsub.get_message(timeout=None)
            if message is not None and message["type"] == "subscribe":
                return

    async def _listen(self) -> None:
        pubsub = self._pubsub
        assert pubsub is not None
        is_awaiting_pong = False
        while True:
            message = await pubsub.get_message(timeout=self._ping_interval_s)
            if message is None:
                if is_awaiting_pong:
                    raise ConnectionError(f"no answer to PING within {self._ping_interval_s}s")
                await pubsub.ping()
                is_awaiting_pong = True
                continue
            is_awaiting_pong = False
            if message["type"] == "message":
                self._on_message(message["data"])

    def _on_message(self, data: bytes) -> None:
        try:
            origin, topic, key = decode_message(data)
        except ValueError as exc:
            log.warning("redis bus: ignoring a foreign message on %s: %s", self.channel, exc)
            return
        self._received(origin, topic, key)

    async def _close_listener(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        client, self._listener = self._listener, None
        try:
            if pubsub is not None:
                await pubsub.aclose()  # type: ignore[no-untyped-call]
        finally:
            if client is not None:
                await client.aclose()

    # -- publisher ---------------------------------------------------------------
    async def _send(self, topic: str, key: str) -> None:
        if self._publisher is None:
            self._publisher = self._client("publish", socket_timeout_s=self._publish_timeout_s)
        await self._publisher.publish(self.channel, encode_message(self.instance_id, topic, key))

    async def _close_publisher(self) -> None:
        client, self._publisher = self._publisher, None
        if client is not None:
            await client.aclose()
