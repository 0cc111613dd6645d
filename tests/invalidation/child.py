"""A subscriber in its own OS process, for the cross-process tests.

argv: kind, namespace params as JSON, how many keys to wait for. Prints
``ready`` once subscribed, then one JSON line ``{"key", "at_ns"}`` per key
received on topic ``keys`` (wall clock, comparable with the parent's on one
machine), and exits after the last one.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from tests.invalidation.support import make_bus


def main(argv: list[str]) -> None:
    kind, params, count = argv[0], json.loads(argv[1]), int(argv[2])
    asyncio.run(_run(kind, params, count))


async def _run(kind: str, params: dict[str, str], count: int) -> None:
    bus = make_bus(kind, params)
    received: list[str] = []
    is_done = asyncio.Event()

    def on_key(key: str) -> None:
        at_ns = time.time_ns()
        received.append(key)
        sys.stdout.write(json.dumps({"key": key, "at_ns": at_ns}) + "\n")
        sys.stdout.flush()
        if len(received) >= count:
            is_done.set()

    bus.subscribe("keys", on_key)
    await bus.start()
    try:
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        await asyncio.wait_for(is_done.wait(), 30)
    finally:
        await bus.close()
