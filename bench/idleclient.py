"""Idle streams: open many slow SSE streams at once and hold them while memory is sampled.

What the ``idle-streams`` scenario measures is the gateway's memory per open stream,
so the client throttles how fast it opens them (the servers' accept queues are not
what is measured) and keeps reading each one (a stuck reader would make the server
buffer, which is not idle).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from bench.streamclient import Events, StreamBroken, body_pieces, read_head, request_bytes


@dataclass
class HoldStats:
    """Idle streams: how many were opened, how long that took, and what failed."""

    wanted: int
    opened: int = 0
    failed: int = 0
    ended_early: int = 0
    open_s: float = 0.0
    errors: list[str] = field(default_factory=list)

    def fail(self, message: str) -> None:
        self.failed += 1
        if len(self.errors) < 5:
            self.errors.append(message)


async def _open_and_hold(
    host: str,
    port: int,
    body: bytes,
    opened: asyncio.Event,
    release: asyncio.Event,
    headers: bytes = b"",
) -> bool:
    """Open one stream, signal once its first event is in, keep reading until released.

    Returns whether the stream was still open when released.
    """
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request_bytes(host, port, body, headers))
        response = await read_head(reader)
        if response.status != 200:
            raise StreamBroken(f"HTTP {response.status}")
        events = Events()
        pieces = body_pieces(reader, response)
        async for piece in pieces:
            if events.feed(piece):
                break
        opened.set()
        drain = asyncio.ensure_future(_drain(pieces))
        await release.wait()
        still_open = not drain.done()
        drain.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await drain
        return still_open
    finally:
        writer.close()


async def _drain(pieces: AsyncIterator[bytes]) -> None:
    """Keep consuming the slow stream so the server never sees a stuck reader."""
    async for _ in pieces:
        pass


async def hold_streams(
    url: str,
    body: bytes,
    *,
    count: int,
    hold_s: float,
    sample: Callable[[], None],
    open_concurrency: int = 100,
    open_timeout_s: float = 60.0,
    headers: bytes = b"",
) -> HoldStats:
    """Open ``count`` slow streams, call ``sample`` repeatedly while all are open, then close all.

    Opening is throttled to ``open_concurrency`` at a time so the servers' accept
    queues are not what is being measured.
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    stats = HoldStats(wanted=count)
    release = asyncio.Event()
    gate = asyncio.Semaphore(open_concurrency)
    settled = asyncio.Event()  # every stream is open or has failed

    async def one() -> None:
        opened = asyncio.Event()
        async with gate:
            task = asyncio.ensure_future(_open_and_hold(host, port, body, opened, release, headers))
            waiter = asyncio.ensure_future(opened.wait())
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
        if opened.is_set():
            stats.opened += 1
            _settle()
        try:
            if not await task:
                stats.ended_early += 1
        except (OSError, asyncio.IncompleteReadError, ValueError, StreamBroken) as exc:
            stats.fail(f"{type(exc).__name__}: {exc}")
            _settle()

    def _settle() -> None:
        if stats.opened + stats.failed >= count:
            settled.set()

    started = time.perf_counter()
    tasks = [asyncio.ensure_future(one()) for _ in range(count)]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(settled.wait(), open_timeout_s)
    stats.open_s = time.perf_counter() - started
    end = time.perf_counter() + hold_s
    while True:
        sample()
        if time.perf_counter() >= end:
            break
        await asyncio.sleep(0.25)
    release.set()
    _, lingering = await asyncio.wait(tasks, timeout=5)
    for task in lingering:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return stats
