"""A metering endpoint on loopback: real HTTP/1.1 (keep-alive), failing on request.

Records every request it accepted (method, path, headers, body) and answers the
first ``fail_first`` requests with 503, as an ingest API that is down would.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def events(self) -> list[dict[str, Any]]:
        value = orjson.loads(self.body)
        return value if isinstance(value, list) else [value]


@dataclass
class Receiver:
    port: int = 0
    fail_first: int = 0
    attempts: int = 0
    accepted: list[Received] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1/events"

    def event_ids(self) -> list[str]:
        return [e["id"] for r in self.accepted for e in r.events()]

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                _, path, _ = lines[0].split(" ", 2)
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (line.partition(":") for line in lines[1:] if line)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.attempts += 1
                if self.attempts <= self.fail_first:
                    answer = b'{"error":"unavailable"}'
                    status = b"503 Service Unavailable"
                else:
                    self.accepted.append(Received(path, headers, body))
                    answer, status = b"", b"204 No Content"
                writer.write(
                    b"HTTP/1.1 %s\r\ncontent-length: %d\r\n\r\n%s" % (status, len(answer), answer)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


@asynccontextmanager
async def receiver(fail_first: int = 0) -> AsyncIterator[Receiver]:
    state = Receiver(fail_first=fail_first)
    server = await asyncio.start_server(state.handle, "127.0.0.1", 0)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()
        await server.wait_closed()
