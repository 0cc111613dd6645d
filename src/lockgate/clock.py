"""The clock a request's timings are read from.

``time.monotonic`` (nanosecond resolution on Linux), not the event loop's
``loop.time()``: uvloop's advances in whole milliseconds, once per loop turn,
so every sub-millisecond stage (authentication, admission, the gateway's own
share) used to read as 0 or 1 ms in Server-Timing, the access log, metrics
and traces. Timers and deadlines stay on ``loop.time()``; the two share
CLOCK_MONOTONIC's origin, and ``as_loop_time`` moves a stamp from one to the
other exactly where a deadline is derived from a measured time.
"""

from __future__ import annotations

import asyncio
from time import monotonic as now

__all__ = ["as_loop_time", "now"]


def as_loop_time(stamp: float, loop: asyncio.AbstractEventLoop) -> float:
    """``stamp`` (a ``now()`` reading) on ``loop``'s clock."""
    return loop.time() - (now() - stamp)
