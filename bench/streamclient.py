"""A small asyncio HTTP/1.1 client for server-sent-event streams: TTFT and total time.

wrk counts whole streams but cannot tell when the first event arrived, nor
check what was in the stream; this client does both, over keep-alive
connections, with nothing between it and the socket but asyncio streams.
``idleclient.py`` uses the same pieces to hold many slow streams open.

Standalone: ``python -m bench.streamclient http://127.0.0.1:8080 --count 200``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import orjson

PATH = "/v1/chat/completions"
STREAM_TIMEOUT_S = 60.0


def stream_body(model: str, max_tokens: int) -> bytes:
    """The streaming chat request every scenario sends."""
    return orjson.dumps(
        {
            "model": model,
            "messages": [{"role": "user", "content": "hello"}],
            "max_tokens": max_tokens,
            "stream": True,
        }
    )


def request_bytes(host: str, port: int, body: bytes, headers: bytes = b"") -> bytes:
    """``headers``: extra pre-serialised ``name: value\\r\\n`` lines (e.g. credentials)."""
    return (
        b"POST %s HTTP/1.1\r\nhost: %s:%d\r\ncontent-type: application/json\r\n"
        b"accept: text/event-stream\r\n%scontent-length: %d\r\n\r\n%s"
        % (PATH.encode(), host.encode(), port, headers, len(body), body)
    )


class StreamBroken(Exception):
    """The stream was not what an OpenAI-compatible stream must be."""


@dataclass
class Response:
    status: int
    headers: dict[bytes, bytes]

    @property
    def keep_alive(self) -> bool:
        return self.headers.get(b"connection", b"").lower() != b"close"


async def read_head(reader: asyncio.StreamReader) -> Response:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return Response(status, headers)


async def body_pieces(reader: asyncio.StreamReader, response: Response) -> AsyncIterator[bytes]:
    """The body's pieces as they arrive: chunked, sized, or up to EOF."""
    if response.headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                    pass
                return
            yield (await reader.readexactly(size + 2))[:-2]
    elif b"content-length" in response.headers:
        yield await reader.readexactly(int(response.headers[b"content-length"]))
    else:
        response.headers[b"connection"] = b"close"
        while piece := await reader.read(65536):
            yield piece


class Events:
    """Splits SSE pieces into ``data:`` payloads (events may straddle chunk borders)."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, piece: bytes) -> list[bytes]:
        if b"\r" in piece:
            piece = piece.replace(b"\r\n", b"\n")
        self._buffer += piece
        *events, self._buffer = self._buffer.split(b"\n\n")
        return [
            line[5:].strip()
            for event in events
            for line in event.split(b"\n")
            if line.startswith(b"data:")
        ]


def content_events(payloads: list[bytes]) -> int:
    """How many events carry generated text (the role-only head and usage do not)."""
    count = 0
    for payload in payloads:
        event = orjson.loads(payload)
        for choice in event.get("choices") or ():
            if (choice.get("delta") or {}).get("content"):
                count += 1
    return count


@dataclass
class StreamTiming:
    ttft_s: float
    total_s: float


@dataclass
class StreamStats:
    """What a batch of streams showed; ``errors`` holds the first few messages verbatim."""

    count: int = 0
    ok: int = 0
    failed: int = 0
    wall_s: float = 0.0
    ttft_s: list[float] = field(default_factory=list)
    total_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def fail(self, message: str) -> None:
        self.failed += 1
        if len(self.errors) < 5:
            self.errors.append(message)


class _Conn:
    """One keep-alive connection that reconnects when the server closes it."""

    def __init__(self, host: str, port: int, headers: bytes = b"") -> None:
        self.host, self.port, self.headers = host, port, headers
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.reader is None or self.writer is None or self.reader.at_eof():
            self.close()
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        return self.reader, self.writer

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def one_stream(conn: _Conn, body: bytes, expect_events: int) -> StreamTiming:
    """Send one streaming request; time the first ``data:`` event and ``[DONE]``; validate."""
    reader, writer = await conn.open()
    started = time.perf_counter()
    writer.write(request_bytes(conn.host, conn.port, body, conn.headers))
    response = await read_head(reader)
    if response.status != 200:
        raw = b"".join([piece async for piece in body_pieces(reader, response)])
        conn.close()
        raise StreamBroken(f"HTTP {response.status}: {raw[:300]!r}")
    events = Events()
    payloads: list[bytes] = []
    first = done = 0.0
    async for piece in body_pieces(reader, response):
        now = time.perf_counter()
        for payload in events.feed(piece):
            first = first or now
            if payload == b"[DONE]":
                done = now
            elif not done:
                payloads.append(payload)
    if not response.keep_alive:
        conn.close()
    if not done:
        raise StreamBroken(f"stream ended without [DONE] after {len(payloads)} events")
    got = content_events(payloads)
    if got != expect_events:
        raise StreamBroken(f"expected {expect_events} content events, got {got}")
    return StreamTiming(first - started, done - started)


async def run_streams(
    url: str,
    body: bytes,
    *,
    concurrency: int,
    count: int,
    expect_events: int,
    headers: bytes = b"",
) -> StreamStats:
    """``count`` streams over ``concurrency`` keep-alive connections, each checked in full."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    stats = StreamStats(count=count)
    remaining = iter(range(count))

    async def worker() -> None:
        conn = _Conn(host, port, headers)
        try:
            for _ in remaining:
                try:
                    timing = await asyncio.wait_for(
                        one_stream(conn, body, expect_events), STREAM_TIMEOUT_S
                    )
                except (OSError, asyncio.IncompleteReadError, ValueError, TimeoutError) as exc:
                    conn.close()
                    stats.fail(f"{type(exc).__name__}: {exc}")
                except StreamBroken as exc:
                    conn.close()
                    stats.fail(str(exc))
                else:
                    stats.ok += 1
                    stats.ttft_s.append(timing.ttft_s)
                    stats.total_s.append(timing.total_s)
        finally:
            conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(min(concurrency, count))))
    stats.wall_s = time.perf_counter() - started
    return stats


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def new_loop() -> asyncio.AbstractEventLoop:
    """uvloop when present: the client must stay cheaper than what it measures."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - non-Linux
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def main() -> None:
    """Standalone use, for poking at one target by hand."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url", help="base URL, e.g. http://127.0.0.1:8080")
    parser.add_argument("--model", default="bench-model")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--count", type=int, default=500)
    args = parser.parse_args()
    body = stream_body(args.model, args.max_tokens)
    with asyncio.Runner(loop_factory=new_loop) as runner:
        stats = runner.run(
            run_streams(
                args.url,
                body,
                concurrency=args.concurrency,
                count=args.count,
                expect_events=args.max_tokens,
            )
        )
    summary = {
        "ok": stats.ok,
        "failed": stats.failed,
        "errors": stats.errors,
        "streams_per_s": stats.ok / stats.wall_s if stats.wall_s else 0.0,
        "ttft_ms": {q: percentile(stats.ttft_s, q) * 1000 for q in (50, 99)},
        "total_ms": {q: percentile(stats.total_s, q) * 1000 for q in (50, 99)},
        "ttft_mean_ms": statistics.fmean(stats.ttft_s) * 1000 if stats.ttft_s else 0.0,
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
