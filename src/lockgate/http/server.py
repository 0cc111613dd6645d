"""The listening side: accept connections, sweep idle ones, drain on shutdown.

Requests are parsed and answered by ``connection.Connection``; this module owns
the sockets and the set of live connections, which is what a graceful drain
needs. The names handlers use are re-exported here.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable

from lockgate.http.connection import (
    ClientDisconnected,
    Connection,
    Handler,
    Headers,
    HttpRequest,
    status_line,
)

__all__ = [
    "ClientDisconnected",
    "Connection",
    "Handler",
    "Headers",
    "HttpRequest",
    "HttpServer",
    "status_line",
]


def _plain_rejection(status: int, message: bytes) -> tuple[bytes, bytes]:
    return b"content-type: text/plain\r\n", message


class HttpServer:
    """Owns the listening socket(s) and every live connection, for graceful drain."""

    def __init__(
        self,
        handler: Handler,
        *,
        max_body_bytes: int = 10 * 1024 * 1024,
        render_rejection: Callable[[int, bytes], tuple[bytes, bytes]] = _plain_rejection,
        on_handler_crash: Callable[[], None] = lambda: None,
        idle_timeout_s: float = 60.0,
    ) -> None:
        self.handler = handler
        self.max_body_bytes = max_body_bytes
        # Renders (headers, body) for requests refused before a handler runs.
        self.render_rejection = render_rejection
        self.on_handler_crash = on_handler_crash
        self.connections: set[Connection] = set()
        self.is_draining = False
        self.idle_timeout_s = idle_timeout_s
        self.loop = asyncio.get_running_loop()
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def listen(
        self, host: str, port: int, *, reuse_port: bool = False, sock: socket.socket | None = None
    ) -> int:
        """Start accepting; returns the bound port (useful with port 0)."""
        if sock is not None:
            server = await self.loop.create_server(
                lambda: Connection(self), sock=sock, backlog=4096
            )
        else:
            server = await self.loop.create_server(
                lambda: Connection(self), host, port, reuse_port=reuse_port or None, backlog=4096
            )
        self._server = server
        if self._sweeper is None:
            self._sweeper = self.loop.create_task(self._close_idle_connections())
        bound: int = server.sockets[0].getsockname()[1]
        return bound

    async def _close_idle_connections(self) -> None:
        """Close connections with no request in progress for ``idle_timeout_s``.

        Covers idle keep-alive connections and clients that send a request too
        slowly (slowloris): the clock runs until a *complete* request arrives.
        A sweep costs nothing per request, unlike a timer per request.
        """
        interval = min(1.0, self.idle_timeout_s / 4)
        while True:
            await asyncio.sleep(interval)
            cutoff = self.loop.time() - self.idle_timeout_s
            for conn in list(self.connections):
                if 0.0 < conn.idle_since < cutoff and conn.transport is not None:
                    conn.transport.close()

    async def drain(self, timeout_s: float) -> int:
        """Stop accepting, let in-flight requests finish for up to ``timeout_s``, then close.

        Returns how many connections were still busy at the deadline and were cut.
        """
        self.is_draining = True
        if self._server is not None:
            self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        deadline = self.loop.time() + timeout_s
        while True:
            for conn in list(self.connections):
                if conn.is_idle and conn.transport is not None:
                    conn.transport.close()
            busy = [c for c in self.connections if not c.is_idle]
            if not busy or self.loop.time() >= deadline:
                break
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
        return len(busy)
