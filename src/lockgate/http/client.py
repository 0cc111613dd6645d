"""Pooled HTTP/1.1 client for upstream calls, with per-phase deadlines.

One ``Origin`` per (scheme, host, port) keeps idle keep-alive connections.
A request goes: ``origin.send(...)`` -> ``UpstreamResponse`` whose head is
awaited with a first-byte deadline and whose body is read chunk by chunk with
an idle deadline. Reading is paused while unread data exceeds a high-water
mark, so a slow client pushes back all the way to the upstream socket.

Contract: every ``UpstreamResponse`` must end with ``release()`` (body fully
read: connection returns to the pool) or ``abort()`` (anything else: the
connection is closed, which is how the upstream learns to stop generating).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import ssl
from typing import Literal, cast

import httptools

from lockgate import clock

Phase = Literal["connect", "first_byte", "idle", "total"]

_HIGH_WATER = 256 * 1024
_LOW_WATER = 64 * 1024


class UpstreamError(Exception):
    """Transport-level failure talking to an upstream (before or during a response)."""

    def __init__(self, message: str, *, is_retryable_on_new_connection: bool = False) -> None:
        super().__init__(message)
        self.is_retryable_on_new_connection = is_retryable_on_new_connection


class UpstreamTimeout(UpstreamError):
    def __init__(self, phase: Phase, timeout_s: float) -> None:
        super().__init__(f"upstream {phase.replace('_', ' ')} timeout after {timeout_s:g}s")
        self.phase: Phase = phase
        self.timeout_s = timeout_s


class Deadlines:
    """Per-request timeouts in seconds; ``total`` bounds everything after connect starts."""

    __slots__ = ("connect_s", "first_byte_s", "idle_s", "total_s")

    def __init__(self, connect_s: float, first_byte_s: float, idle_s: float, total_s: float):
        self.connect_s = connect_s
        self.first_byte_s = first_byte_s
        self.idle_s = idle_s
        self.total_s = total_s


class UpstreamResponse(asyncio.Protocol):
    """One upstream connection, seen through the response it is currently carrying."""

    def __init__(self, origin: Origin) -> None:
        self._origin = origin
        self._loop = origin.loop
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._is_reading_paused = False
        self._is_head_done = False
        self._is_keep_alive = False
        self._is_body_done = False
        self._error: UpstreamError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._total_deadline = 0.0
        self._deadlines: Deadlines | None = None
        self.is_reused = False
        self.has_received_bytes = False
        self.first_byte_at = 0.0

    # -- protocol ----------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        sock = self.transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if not self.has_received_bytes:
            self.has_received_bytes = True
            self.first_byte_at = clock.now()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._fail(UpstreamError("upstream sent a malformed HTTP response"))
            return
        if self._buffered > _HIGH_WATER and not self._is_reading_paused and self.transport:
            self._is_reading_paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._origin.forget(self)
        if not self._is_body_done:
            if self._is_head_done or self.has_received_bytes:
                self._fail(UpstreamError("upstream closed the connection mid-response"))
            else:
                self._fail(
                    UpstreamError(
                        "upstream closed the connection before responding",
                        is_retryable_on_new_connection=self.is_reused,
                    )
                )
        self.transport = None

    # -- httptools callbacks ------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        # Read now: llhttp forgets it once the message is complete.
        self._is_keep_alive = self._parser.should_keep_alive()
        self._is_head_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        self._wake()

    def on_message_complete(self) -> None:
        self._is_body_done = True
        self._wake()

    # -- waiting ---------------------------------------------------------------
    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: UpstreamError) -> None:
        if self._error is None:
            self._error = error
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)

    async def _wait(self, phase: Phase, timeout_s: float) -> None:
        """Wait for the next parser event, bounded by ``timeout_s`` and the total deadline."""
        if self._error is not None:
            raise self._error
        loop = self._loop
        deadline = loop.time() + timeout_s
        if deadline > self._total_deadline:
            deadline = self._total_deadline
            assert self._deadlines is not None
            phase, timeout_s = "total", self._deadlines.total_s
        waiter = loop.create_future()
        self._waiter = waiter
        timer = loop.call_at(deadline, self._on_timeout, waiter, phase, timeout_s)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    @staticmethod
    def _on_timeout(waiter: asyncio.Future[None], phase: Phase, timeout_s: float) -> None:
        if not waiter.done():
            waiter.set_exception(UpstreamTimeout(phase, timeout_s))

    # -- public API --------------------------------------------------------------
    def _send(self, data: bytes, deadlines: Deadlines, total_deadline: float) -> None:
        assert self.transport is not None
        self._deadlines = deadlines
        self._total_deadline = total_deadline
        self.transport.write(data)

    async def read_head(self) -> None:
        """Wait for the status line and headers (the first-byte deadline applies)."""
        assert self._deadlines is not None
        while not self._is_head_done:
            await self._wait("first_byte", self._deadlines.first_byte_s)

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    async def read_chunk(self) -> bytes | None:
        """Next piece of body as received, or None at the end of the body."""
        assert self._deadlines is not None
        while not self._chunks:
            if self._is_body_done:
                return None
            await self._wait("idle", self._deadlines.idle_s)
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        if self._is_reading_paused and self._buffered < _LOW_WATER and self.transport:
            self._is_reading_paused = False
            self.transport.resume_reading()
        return chunk

    async def read_body(self, limit: int) -> bytes:
        parts: list[bytes] = []
        size = 0
        while (chunk := await self.read_chunk()) is not None:
            size += len(chunk)
            if size > limit:
                raise UpstreamError(f"upstream response larger than {limit} bytes")
            parts.append(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def release(self) -> None:
        """Give the connection back to the pool if it can carry another request."""
        if (
            self._is_body_done
            and self._error is None
            and self.transport is not None
            and self._is_keep_alive
        ):
            self._origin.put_idle(self)
        else:
            self.abort()

    def abort(self) -> None:
        """Close the connection now: the upstream sees a disconnect and stops its work."""
        transport = self.transport
        if transport is not None:
            transport.abort()
            self.transport = None
        self._origin.forget(self)

    def _reset_for_reuse(self) -> None:
        # The parser carries over: llhttp parses consecutive messages on one connection.
        self.status = 0
        self.headers = []
        self._chunks.clear()
        self._buffered = 0
        self._is_head_done = False
        self._is_body_done = False
        self._error = None
        self.has_received_bytes = False
        self.is_reused = True


class Origin:
    """Keep-alive pool for one upstream (scheme, host, port)."""

    def __init__(
        self, scheme: str, host: str, port: int, *, max_idle: int = 256, tls: ssl.SSLContext | None
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.scheme = scheme
        self.host = host
        self.port = port
        self.max_idle = max_idle
        self._tls = tls
        self._idle: list[UpstreamResponse] = []
        self._all: set[UpstreamResponse] = set()
        self.host_header = host.encode() if port in (80, 443) else b"%s:%d" % (host.encode(), port)

    async def _connect(self, timeout_s: float) -> UpstreamResponse:
        try:
            async with asyncio.timeout(timeout_s):
                _, protocol = await self.loop.create_connection(
                    lambda: UpstreamResponse(self),
                    self.host,
                    self.port,
                    ssl=self._tls,
                    server_hostname=self.host if self._tls else None,
                )
        except TimeoutError:
            raise UpstreamTimeout("connect", timeout_s) from None
        except OSError as exc:
            raise UpstreamError(f"cannot connect to upstream: {exc.strerror or exc}") from None
        self._all.add(protocol)
        return protocol

    async def send(self, head_and_body: bytes, deadlines: Deadlines) -> UpstreamResponse:
        """Send a serialised request and wait for the response head.

        A reused connection that the upstream had already closed is retried
        once on a new connection: nothing was processed, so this is safe.
        """
        total_deadline = self.loop.time() + deadlines.total_s
        while self._idle:
            conn = self._idle.pop()
            if conn.transport is None or conn.transport.is_closing():
                continue
            conn._reset_for_reuse()
            conn._send(head_and_body, deadlines, total_deadline)
            try:
                await conn.read_head()
            except UpstreamError as exc:
                conn.abort()
                if exc.is_retryable_on_new_connection:
                    break
                raise
            except BaseException:
                conn.abort()
                raise
            return conn
        conn = await self._connect(deadlines.connect_s)
        conn._send(head_and_body, deadlines, total_deadline)
        try:
            await conn.read_head()
        except BaseException:
            conn.abort()
            raise
        return conn

    def put_idle(self, conn: UpstreamResponse) -> None:
        if len(self._idle) < self.max_idle:
            self._idle.append(conn)
        else:
            conn.abort()

    def forget(self, conn: UpstreamResponse) -> None:
        self._all.discard(conn)
        with contextlib.suppress(ValueError):
            self._idle.remove(conn)

    def close(self) -> None:
        for conn in list(self._all):
            conn.abort()
        self._idle.clear()
