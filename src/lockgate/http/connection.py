"""One client connection: HTTP/1.1 parsing (httptools) and the response API handlers use.

Contract for handlers (``Handler``): called once per complete request with the
request and its ``Connection``. The handler must produce exactly one response,
either ``respond()`` in one go or ``start()`` + ``await write()``... + ``end()``.
If the client disconnects, the handler's task is cancelled: that is how
upstream work gets cancelled at once, without polling.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
from collections.abc import Awaitable, Callable, Iterable
from http import HTTPStatus
from typing import TYPE_CHECKING, cast

import httptools

if TYPE_CHECKING:
    from lockgate.http.server import HttpServer

Headers = Iterable[tuple[bytes, bytes]]

_STATUS_LINES: dict[int, bytes] = {
    s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in HTTPStatus
}
# Upper bound on request header bytes; httptools has no limit of its own.
_MAX_HEADER_BYTES = 64 * 1024
# Pipelined requests queued behind the one in progress before we stop reading.
_MAX_PIPELINED = 16
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    return line if line is not None else b"HTTP/1.1 %d Unknown\r\n" % status


class ClientDisconnected(Exception):
    """The client went away while we were writing to it."""


class HttpRequest:
    """One parsed request. Header names are lower-cased; repeated headers are joined."""

    __slots__ = ("body", "headers", "method", "path", "query", "target")

    def __init__(self, method: bytes, target: bytes, headers: dict[bytes, bytes], body: bytes):
        self.method = method
        self.target = target
        path, _, query = target.partition(b"?")
        self.path = path.decode("latin-1")
        self.query = query
        self.headers = headers
        self.body = body


Handler = Callable[[HttpRequest, "Connection"], Awaitable[None]]


class Connection(asyncio.Protocol):
    """Server side of one client connection.

    Requests on a keep-alive connection are handled strictly in order; a
    pipelined request waits in ``_pending`` until the previous response ended.
    """

    __slots__ = (
        "_body_limit",
        "_body_parts",
        "_body_size",
        "_deferred_rejection",
        "_drain_waiter",
        "_head",
        "_header_bytes",
        "_headers",
        "_is_chunked",
        "_is_paused",
        "_is_reading_paused",
        "_keep_alive",
        "_parser",
        "_pending",
        "_refusal",
        "_server",
        "_task",
        "_url",
        "client_ip",
        "idle_since",
        "is_closed",
        "is_response_started",
        "loop",
        "transport",
    )

    def __init__(self, server: HttpServer) -> None:
        self._server = server
        self.loop = server.loop
        self._body_limit = server.max_body_bytes
        self._parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.client_ip = ""
        self._url = b""
        self._headers: dict[bytes, bytes] = {}
        self._header_bytes = 0
        self._body_parts: list[bytes] = []
        self._body_size = 0
        self._pending: collections.deque[HttpRequest] = collections.deque()
        self._task: asyncio.Task[None] | None = None
        self._keep_alive = True
        self._is_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._refusal: tuple[int, bytes] | None = None
        self._deferred_rejection: tuple[int, bytes] | None = None
        self._head = b""
        self._is_chunked = True
        self._is_reading_paused = False
        # loop time since when no request has been in progress (0.0 while one is).
        self.idle_since = self.loop.time()
        self.is_closed = False
        self.is_response_started = False

    # -- asyncio.Protocol -------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        sock = self.transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = transport.get_extra_info("peername")
        self.client_ip = peer[0] if isinstance(peer, tuple) else ""
        self._server.connections.add(self)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reject_in_turn(400, b"protocol upgrades are not supported")
        except httptools.HttpParserError:
            # httptools wraps exceptions raised in our callbacks; the status says why.
            self._reject_in_turn(*(self._refusal or (400, b"malformed HTTP request")))

    def connection_lost(self, exc: Exception | None) -> None:
        self.is_closed = True
        self._server.connections.discard(self)
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._pending.clear()
        self._wake_writer(ClientDisconnected())

    def pause_writing(self) -> None:
        self._is_paused = True

    def resume_writing(self) -> None:
        self._is_paused = False
        self._wake_writer(None)

    # -- httptools callbacks ----------------------------------------------
    def _refuse(self, status: int, message: bytes) -> None:
        self._refusal = (status, message)
        raise _Refused

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._header_bytes = 0
        self._body_parts = []
        self._body_size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._header_bytes += len(url)
        if self._header_bytes > _MAX_HEADER_BYTES:
            self._refuse(431, b"request headers too large")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > _MAX_HEADER_BYTES:
            self._refuse(431, b"request headers too large")
        key = name.lower()
        previous = self._headers.get(key)
        self._headers[key] = value if previous is None else previous + b", " + value

    def on_headers_complete(self) -> None:
        headers = self._headers
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self._body_limit:
            self._refuse(413, b"request body exceeds the configured limit")
        expect = headers.get(b"expect")
        if expect is not None and expect.lower() == b"100-continue" and self.transport:
            # curl and others wait ~1 s for this before sending a large body.
            self.transport.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self._body_limit:
            self._refuse(413, b"request body exceeds the configured limit")
        self._body_parts.append(body)

    def on_message_complete(self) -> None:
        parts = self._body_parts
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        request = HttpRequest(self._parser.get_method(), self._url, self._headers, body)
        if not self._parser.should_keep_alive():
            self._keep_alive = False
        if self._task is None:
            self._start(request)
        else:
            self._pending.append(request)
            if len(self._pending) >= _MAX_PIPELINED and self.transport is not None:
                self._is_reading_paused = True
                self.transport.pause_reading()

    # -- request lifecycle --------------------------------------------------
    def _start(self, request: HttpRequest) -> None:
        self.is_response_started = False
        self.idle_since = 0.0
        self._is_chunked = self._parser.get_http_version() != "1.0"
        self._task = self.loop.create_task(self._run(request))

    async def _run(self, request: HttpRequest) -> None:
        try:
            await self._server.handler(request, self)
        except (asyncio.CancelledError, ClientDisconnected):
            return
        except Exception:  # the handler's own error mapping failed: last resort
            self._server.on_handler_crash()
            if not self.is_response_started:
                self._reject(500, b"internal gateway error")
            elif self.transport is not None:
                self.transport.close()
            return
        self._finish()

    def _finish(self) -> None:
        self._task = None
        transport = self.transport
        if self.is_closed or transport is None:
            return
        if not self._keep_alive or self._server.is_draining:
            transport.close()
            return
        if self._pending:
            self._start(self._pending.popleft())
            if self._is_reading_paused and len(self._pending) < _MAX_PIPELINED // 2:
                self._is_reading_paused = False
                transport.resume_reading()
        elif self._deferred_rejection is not None:
            self._reject(*self._deferred_rejection)
        else:
            self.idle_since = self.loop.time()

    def _reject_in_turn(self, status: int, message: bytes) -> None:
        """Reject now, or after the responses still owed on this connection (pipelining)."""
        if self._task is None:
            self._reject(status, message)
            return
        self._deferred_rejection = (status, message)
        if self.transport is not None:
            self.transport.pause_reading()

    def _reject(self, status: int, message: bytes) -> None:
        """Answer a request we cannot parse or accept, then close the connection."""
        transport = self.transport
        if transport is None or self.is_closed:
            return
        if not self.is_response_started:
            headers, body = self._server.render_rejection(status, message)
            transport.write(
                b"%s%scontent-length: %d\r\nconnection: close\r\n\r\n%s"
                % (status_line(status), headers, len(body), body)
            )
        transport.close()

    # -- response API used by handlers ------------------------------------
    def respond(self, status: int, headers: bytes, body: bytes) -> None:
        """Send a whole response. ``headers`` is pre-serialised ``name: value\\r\\n`` lines."""
        if self.is_closed:
            raise ClientDisconnected
        assert self.transport is not None
        self.is_response_started = True
        conn = (
            b"" if self._keep_alive and not self._server.is_draining else b"connection: close\r\n"
        )
        self.transport.write(
            b"%s%scontent-length: %d\r\n%s\r\n%s"
            % (status_line(status), headers, len(body), conn, body)
        )

    def start(self, status: int, headers: bytes, *, flush: bool = False) -> None:
        """Begin a streamed response (chunked; HTTP/1.0: raw until close).

        The head is held until the first ``write``/``end`` so that it leaves
        in the same packet as the first bytes of the body, unless ``flush``
        asks for it to be sent now (a client may be waiting on the headers).
        """
        if self.is_closed:
            raise ClientDisconnected
        self.is_response_started = True
        if not self._is_chunked:
            self._keep_alive = False
            self._head = b"%s%sconnection: close\r\n\r\n" % (status_line(status), headers)
            if flush and self.transport is not None:
                self.transport.write(self._head)
                self._head = b""
            return
        conn = (
            b"" if self._keep_alive and not self._server.is_draining else b"connection: close\r\n"
        )
        self._head = b"%s%stransfer-encoding: chunked\r\n%s\r\n" % (
            status_line(status),
            headers,
            conn,
        )
        if flush and self.transport is not None:
            self.transport.write(self._head)
            self._head = b""

    async def write(self, data: bytes) -> None:
        """Send bytes now; wait while the client is slow (bounded buffering)."""
        if self.is_closed:
            raise ClientDisconnected
        assert self.transport is not None
        if data:
            if self._is_chunked:
                data = b"%x\r\n%s\r\n" % (len(data), data)
            if self._head:
                data = self._head + data
                self._head = b""
            self.transport.write(data)
        if self._is_paused:
            await self._wait_writable()

    def end(self, data: bytes = b"") -> None:
        """Finish the streamed response, optionally with a last piece of body."""
        if self.is_closed:
            raise ClientDisconnected
        assert self.transport is not None
        if self._is_chunked:
            tail = b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data) if data else b"0\r\n\r\n"
        else:
            tail = data
        if self._head:
            tail = self._head + tail
            self._head = b""
        self.transport.write(tail)

    async def _wait_writable(self) -> None:
        waiter = self.loop.create_future()
        self._drain_waiter = waiter
        try:
            await waiter
        finally:
            self._drain_waiter = None

    def _wake_writer(self, exc: Exception | None) -> None:
        waiter = self._drain_waiter
        if waiter is None or waiter.done():
            return
        if exc is None:
            waiter.set_result(None)
        else:
            waiter.set_exception(exc)

    @property
    def is_idle(self) -> bool:
        return self._task is None and not self._pending


class _Refused(Exception):
    """Raised inside a parser callback to stop parsing; ``Connection._refusal`` says why."""
