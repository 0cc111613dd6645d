"""A webhook receiver on loopback: verifies every signature, can fail or hang on purpose."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from types import TracebackType

from lockgate.webhooks import standard
from lockgate.webhooks.signing import SignatureError, verify


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    status: int  # what the receiver answered
    is_verified: bool
    at: float  # loop time it arrived


@dataclass
class Receiver:
    """POSTs to ``url`` are checked against ``secret`` and answered 500 for the first
    ``fail_first``, then 200 (or never, with ``hang``)."""

    secret: str = ""
    fail_first: int = 0
    hang: bool = False
    received: list[Received] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _server: asyncio.Server | None = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/lockgate?source=test"

    async def __aenter__(self) -> Receiver:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._server is not None
        self._server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 2)

    async def wait_for(self, count: int, timeout_s: float = 5.0) -> None:
        async with asyncio.timeout(timeout_s):
            while len(self.received) < count:
                self.arrived.clear()
                await self.arrived.wait()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            try:  # both schemes, every time: Lockgate-Signature and Standard Webhooks
                verify(body, headers.get("lockgate-signature"), self.secret)
                standard.verify(body, headers, self.secret)
                is_verified = True
            except SignatureError:
                is_verified = False
            failing = len(self.received) < self.fail_first
            status = 500 if failing or not is_verified else 200
            self.received.append(
                Received(headers, body, status, is_verified, asyncio.get_running_loop().time())
            )
            self.arrived.set()
            if self.hang:
                await asyncio.sleep(30)
            reason = b"OK" if status == 200 else b"Internal Server Error"
            writer.write(b"HTTP/1.1 %d %s\r\ncontent-length: 2\r\n\r\nok" % (status, reason))
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
