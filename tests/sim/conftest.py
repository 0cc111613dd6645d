"""Fixtures for the simulator tests: a sim factory and a raw HTTP/1.1 client.

The raw client exists because the interesting failures (extra chunks, cut
connections, stalls, malformed events) are invisible through an SDK.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest_asyncio

from lockgate.sim import SimConfig, SimServer

INSTANT: dict[str, Any] = {"ttft_ms": 0, "tokens_per_s": 0}

MakeSim = Callable[..., Awaitable[SimServer]]


@pytest_asyncio.fixture
async def make_sim() -> AsyncIterator[MakeSim]:
    servers: list[SimServer] = []

    async def make(**fields: Any) -> SimServer:
        sim = await SimServer(SimConfig(**fields)).start()
        servers.append(sim)
        return sim

    yield make
    for sim in servers:
        await sim.close()


@pytest_asyncio.fixture
async def sim(make_sim: MakeSim) -> SimServer:
    """An instant-mode simulator, for tests where timing is not the point."""
    return await make_sim(**INSTANT)


class RawResponse:
    def __init__(self, data: bytes, *, reset: bool, timed_out: bool) -> None:
        self.data = data
        self.reset = reset
        self.timed_out = timed_out
        head, sep, rest = data.partition(b"\r\n\r\n")
        self.has_head = bool(sep)
        lines = head.split(b"\r\n")
        self.status = int(lines[0].split()[1]) if self.has_head else 0
        self.headers: dict[str, str] = {}
        for line in lines[1:] if self.has_head else []:
            name, _, value = line.partition(b":")
            self.headers[name.strip().lower().decode()] = value.strip().decode()
        self.raw_body = rest
        self.chunked = self.headers.get("transfer-encoding") == "chunked"
        if self.chunked:
            self.body, self.complete = _dechunk(rest)
        else:
            length = int(self.headers.get("content-length", "-1"))
            self.body = rest
            self.complete = self.has_head and len(rest) == length

    def json(self) -> Any:
        return orjson.loads(self.body)

    @property
    def events(self) -> list[bytes]:
        """SSE ``data:`` payloads, in order (a trailing partial event is left out)."""
        out = []
        for block in self.body.split(b"\n\n")[:-1]:
            assert block.startswith(b"data: "), block
            out.append(block[len(b"data: ") :])
        return out

    @property
    def chunks(self) -> list[dict[str, Any]]:
        return [orjson.loads(e) for e in self.events if e != b"[DONE]"]


def _dechunk(data: bytes) -> tuple[bytes, bool]:
    out = bytearray()
    pos = 0
    while True:
        end = data.find(b"\r\n", pos)
        if end < 0:
            return bytes(out), False
        size = int(data[pos:end], 16)
        if size == 0:
            return bytes(out), data[end + 2 : end + 4] == b"\r\n"
        chunk = data[end + 2 : end + 2 + size]
        if len(chunk) < size:
            out += chunk
            return bytes(out), False
        out += chunk
        pos = end + 2 + size + 2


def encode_request(
    method: str, path: str, json: Any = None, headers: dict[str, str] | None = None
) -> bytes:
    body = b"" if json is None else orjson.dumps(json)
    lines = [f"{method} {path} HTTP/1.1", "host: sim", "connection: close"]
    if json is not None:
        lines.append("content-type: application/json")
    lines.append(f"content-length: {len(body)}")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def raw_request(
    port: int,
    method: str,
    path: str,
    json: Any = None,
    headers: dict[str, str] | None = None,
    wait_s: float = 5.0,
) -> RawResponse:
    """One request on a fresh connection; reads until close, reset or ``wait_s``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(encode_request(method, path, json, headers))
    data = bytearray()
    reset = timed_out = False
    try:
        async with asyncio.timeout(wait_s):
            while chunk := await reader.read(65536):
                data += chunk
    except ConnectionResetError:
        reset = True
    except TimeoutError:
        timed_out = True
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return RawResponse(bytes(data), reset=reset, timed_out=timed_out)


class RawStream:
    """A request whose response is read bit by bit, so the test can walk away mid-stream."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.data = bytearray()

    @classmethod
    async def open(
        cls, port: int, path: str, json: Any, headers: dict[str, str] | None = None
    ) -> RawStream:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(encode_request("POST", path, json, headers))
        return cls(reader, writer)

    async def read_until_count(self, marker: bytes, count: int, wait_s: float = 5.0) -> bytes:
        async with asyncio.timeout(wait_s):
            while self.data.count(marker) < count:
                chunk = await self.reader.read(65536)
                if not chunk:
                    raise EOFError(bytes(self.data))
                self.data += chunk
        return bytes(self.data)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


class RawClient:
    """What tests get from the ``raw`` fixture (conftest modules are not for importing)."""

    Response = RawResponse

    async def request(
        self,
        sim: SimServer,
        method: str,
        path: str,
        json: Any = None,
        headers: dict[str, str] | None = None,
        wait_s: float = 5.0,
    ) -> RawResponse:
        return await raw_request(sim.port, method, path, json, headers, wait_s)

    async def post(
        self, sim: SimServer, path: str, json: Any, headers: dict[str, str] | None = None, **kw: Any
    ) -> RawResponse:
        return await raw_request(sim.port, "POST", path, json, headers, **kw)

    async def get(self, sim: SimServer, path: str, **kw: Any) -> RawResponse:
        return await raw_request(sim.port, "GET", path, **kw)

    async def stream(
        self, sim: SimServer, path: str, json: Any, headers: dict[str, str] | None = None
    ) -> RawStream:
        return await RawStream.open(sim.port, path, json, headers)


@pytest_asyncio.fixture
async def raw() -> RawClient:
    return RawClient()
