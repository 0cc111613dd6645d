"""Pushing usage events to a metering endpoint (OpenMeter and the like) as CloudEvents.

    pusher = CloudEventsPusher(settings, store.usage, owner="host:pid")
    pusher.start()          # one background task, in every worker
    await pusher.close()    # at shutdown: stop, give the lease up

What is pushed: every record the ledger's flusher added while a push is
configured (``UsageRecords.insert_many(queue_for_push=True)`` queues its id in
the same transaction). What guarantees it: the queue is in the store, and an id
leaves it only after the endpoint answered 2xx for its event, so a crash, a
restart or an endpoint outage delays events and never loses one. A retried
batch may reach the endpoint twice; every event's ``id`` is derived from its
record id (``export.event_id``), so the consumer drops the copy (OpenMeter
deduplicates on ``id`` + ``source``).

Who pushes: every worker of every replica runs the task, and only the holder
of the store lease ``cloudevents`` does the work (``repositories/usage_push``).
A store row rather than a Redis lock: the queue is in the store anyway, so the
push depends on nothing else, and embedded deployments have no Redis. The
holder renews the lease before each batch; if it dies, another worker takes
over when the lease expires (``lease_ttl_s``).

Failures: any answer but 2xx, or a transport error, is retried with exponential
back-off and full jitter up to ``backoff_max_s``, for ever — a 4xx usually
means a wrong URL or token, logged at ERROR for an operator to fix; skipping
events instead would lose billing data. Content modes: ``batch`` sends up to
``batch_size`` events as one ``application/cloudevents-batch+json`` array;
``structured`` sends one ``application/cloudevents+json`` event per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol
from urllib.parse import urlsplit

import orjson

from lockgate.config.runtime import read_secret
from lockgate.config.spec import CloudEventsPushSpec
from lockgate.http.client import Deadlines, Origin, UpstreamError
from lockgate.metering.export import Subject, cloud_event
from lockgate.metering.record import UsageRecord
from lockgate.store.columns import utc_now
from lockgate.store.errors import StoreError

log = logging.getLogger(__name__)

LEASE_NAME = "cloudevents"
BATCH_CONTENT_TYPE = b"application/cloudevents-batch+json"
STRUCTURED_CONTENT_TYPE = b"application/cloudevents+json"
_MAX_RESPONSE_BYTES = 64 * 1024
_LOG_EVERY_S = 60.0


class PushFailed(Exception):
    """The endpoint did not accept a batch (a non-2xx answer, or no answer)."""


class PushStore(Protocol):
    """What the pusher needs of ``store.usage`` (``repositories.usage.UsageRecords``)."""

    async def get_many(self, record_ids: Sequence[str]) -> list[UsageRecord]: ...


class PushState(Protocol):
    """``store.usage.push`` (``repositories.usage_push.PushQueue``)."""

    async def take_lease(self, name: str, owner: str, *, now: datetime, ttl_s: float) -> bool: ...
    async def release_lease(self, name: str, owner: str) -> None: ...
    async def pending(self, limit: int) -> list[str]: ...
    async def mark_pushed(self, name: str, record_ids: Sequence[str], *, now: datetime) -> None: ...


@dataclass(frozen=True, slots=True)
class PushSettings:
    """The resolved ``metering.cloudevents`` section (secrets already read)."""

    url: str
    headers: tuple[tuple[str, str], ...] = ()
    source: str = "//lockgate"
    subject: Subject = Subject.ORGANIZATION
    content_mode: Literal["batch", "structured"] = "batch"
    batch_size: int = 100
    interval_s: float = 5.0
    timeout_s: float = 10.0
    backoff_max_s: float = 60.0
    lease_ttl_s: float = 30.0


@dataclass(slots=True)
class PushStats:
    pushed: int = 0  # events the endpoint accepted
    requests: int = 0  # HTTP requests sent
    failures: int = 0  # failed attempts (each retry counts)
    is_leader: bool = False  # gauge: this process holds the lease
    is_endpoint_available: bool = True  # gauge: the last attempt succeeded


@dataclass(slots=True)
class _Endpoint:
    """The URL split for the gateway's HTTP client, and the fixed part of each request head."""

    scheme: str
    host: str
    port: int
    head: bytes
    tls: ssl.SSLContext | None = field(default=None)

    @classmethod
    def parse(cls, url: str, headers: Sequence[tuple[str, str]]) -> _Endpoint:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.username:
            raise ValueError(
                f"metering.cloudevents.url must be http(s) without credentials: {url!r}"
            )
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        lines = [f"POST {target} HTTP/1.1", f"host: {parts.netloc}", "user-agent: lockgate"]
        for name, value in headers:
            if any(c in name + value for c in "\r\n"):
                raise ValueError(f"header {name!r} of metering.cloudevents holds a line break")
            lines.append(f"{name}: {value}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        head = ("\r\n".join(lines) + "\r\n").encode()
        return cls(parts.scheme, parts.hostname, port, head)


class CloudEventsPusher:
    """The push loop of one process; see the module docstring for the guarantees."""

    def __init__(
        self,
        settings: PushSettings,
        records: PushStore,
        state: PushState,
        *,
        owner: str,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._settings = settings
        self._records = records
        self._state = state
        self._owner = owner
        self._clock = clock
        self._endpoint = _Endpoint.parse(settings.url, settings.headers)
        self._origin: Origin | None = None
        self._task: asyncio.Task[None] | None = None
        self._failing_since: float | None = None
        self._last_log = 0.0
        self.stats = PushStats()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="cloudevents-push")

    async def close(self) -> None:
        """Stop pushing and give the lease up, so another replica takes over at once."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._origin is not None:
            self._origin.close()
            self._origin = None
        if self.stats.is_leader:
            with contextlib.suppress(StoreError):
                await self._state.release_lease(LEASE_NAME, self._owner)
            self.stats.is_leader = False

    async def push_once(self) -> int:
        """Take or renew the lease and push one batch; return how many events left the
        queue (0: nothing queued, or another process holds the lease).

        Raises ``PushFailed`` or ``StoreError``; the queue is then unchanged.
        """
        settings = self._settings
        now = self._clock()
        self.stats.is_leader = await self._state.take_lease(
            LEASE_NAME, self._owner, now=now, ttl_s=settings.lease_ttl_s
        )
        if not self.stats.is_leader:
            return 0
        record_ids = await self._state.pending(settings.batch_size)
        if not record_ids:
            return 0
        records = sorted(
            await self._records.get_many(record_ids), key=lambda r: (r.occurred_at, r.record_id)
        )
        if len(records) < len(record_ids):  # cannot happen: queued with the insert
            log.error("%d queued usage records are missing", len(record_ids) - len(records))
        events = [cloud_event(r, source=settings.source, subject=settings.subject) for r in records]
        if settings.content_mode == "batch":
            if events:
                await self._post(BATCH_CONTENT_TYPE, orjson.dumps(events))
        else:
            for event in events:
                await self._post(STRUCTURED_CONTENT_TYPE, orjson.dumps(event))
        await self._state.mark_pushed(LEASE_NAME, record_ids, now=self._clock())
        self.stats.pushed += len(events)
        self.stats.is_endpoint_available = True
        return len(record_ids)

    async def _post(self, content_type: bytes, body: bytes) -> None:
        endpoint = self._endpoint
        if endpoint.scheme == "https" and endpoint.tls is None:
            # Loading the system trust store reads files: keep it off the event loop.
            endpoint.tls = await asyncio.to_thread(ssl.create_default_context)
        if self._origin is None:
            self._origin = Origin(endpoint.scheme, endpoint.host, endpoint.port, tls=endpoint.tls)
        request = b"%scontent-type: %s\r\ncontent-length: %d\r\n\r\n%s" % (
            endpoint.head,
            content_type,
            len(body),
            body,
        )
        t = self._settings.timeout_s
        self.stats.requests += 1
        try:
            async with asyncio.timeout(t):
                response = await self._origin.send(request, Deadlines(t, t, t, t))
                try:
                    answer = await response.read_body(_MAX_RESPONSE_BYTES)
                except BaseException:
                    response.abort()
                    raise
                response.release()
        except TimeoutError:
            raise PushFailed(f"no answer within {t:g} s") from None
        except UpstreamError as error:
            raise PushFailed(str(error)) from None
        if not 200 <= response.status < 300:
            excerpt = answer[:200].decode("utf-8", "replace")
            raise PushFailed(f"the endpoint answered HTTP {response.status}: {excerpt}")

    async def _run(self) -> None:
        settings = self._settings
        delay_s = min(1.0, settings.backoff_max_s)
        loop = asyncio.get_running_loop()
        while True:
            try:
                moved = await self.push_once()
            except (PushFailed, StoreError) as error:
                self.stats.failures += 1
                self.stats.is_endpoint_available = isinstance(error, StoreError)
                self._note_failure(error, loop.time())
                await asyncio.sleep(random.uniform(0, delay_s))  # noqa: S311 - not crypto
                delay_s = min(delay_s * 2, settings.backoff_max_s)
                continue
            if self._failing_since is not None:
                log.warning("cloudevents push: delivering again")
                self._failing_since = None
            delay_s = min(1.0, settings.backoff_max_s)
            if not self.stats.is_leader:
                await asyncio.sleep(settings.lease_ttl_s / 3)
            elif moved < settings.batch_size:
                await asyncio.sleep(settings.interval_s)

    def _note_failure(self, error: Exception, now: float) -> None:
        if self._failing_since is None:
            self._failing_since = self._last_log = now
        elif now - self._last_log < _LOG_EVERY_S:
            return
        self._last_log = now
        level = logging.ERROR if " HTTP 4" in str(error) else logging.WARNING
        log.log(level, "cloudevents push to %s failed (%s); retrying", self._settings.url, error)


def push_settings(spec: CloudEventsPushSpec) -> PushSettings:
    """Resolve the config section: read the secret references of its headers.

    Raises ``ValueError`` naming a secret that cannot be read (never its value).
    """
    headers = tuple(
        (name.lower(), value if isinstance(value, str) else read_secret(value))
        for name, value in sorted(spec.headers.items())
    )
    return PushSettings(
        url=spec.url,
        headers=headers,
        source=spec.source,
        subject=Subject(spec.subject),
        content_mode=spec.content_mode,
        batch_size=spec.batch_size,
        interval_s=spec.interval_s,
        timeout_s=spec.timeout_s,
        backoff_max_s=spec.backoff_max_s,
        lease_ttl_s=spec.lease_ttl_s,
    )
