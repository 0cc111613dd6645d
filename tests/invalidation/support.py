"""Helpers for the invalidation tests: building a bus by kind, recording deliveries,
and a subscriber in a separate OS process."""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lockgate.invalidation import (
    Backoff,
    InProcessBus,
    InvalidationBus,
    PostgresBus,
    RedisBus,
    SqliteBus,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
NETWORKED_KINDS = ("redis", "postgres", "sqlite")
ALL_KINDS = ("inprocess", *NETWORKED_KINDS)
# Tests use short back-off so reconnects are quick; production keeps the defaults.
FAST_BACKOFF = {"initial_s": 0.05, "max_s": 0.5}


def make_bus(kind: str, params: dict[str, str]) -> Any:
    """A new, unstarted bus of ``kind`` in the namespace ``params`` (JSON-able, for children)."""
    backoff = Backoff(**FAST_BACKOFF)
    if kind == "inprocess":
        return InProcessBus()
    if kind == "redis":
        return RedisBus(params["url"], params["prefix"], backoff=backoff)
    if kind == "postgres":
        return PostgresBus(params["dsn"], params["channel"], backoff=backoff)
    if kind == "sqlite":
        return SqliteBus(params["path"], backoff=backoff)
    raise ValueError(kind)


async def assert_no_new_tasks(before: set[asyncio.Task[Any]]) -> None:
    """No task started since ``before`` is still pending: a bus's close() awaited its own."""
    await asyncio.sleep(0)
    assert {task for task in asyncio.all_tasks() - before if not task.done()} == set()


class Recorder:
    """A key handler that remembers what it got and lets a test wait for it."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.calls = 0
        self._changed = asyncio.Event()

    def __call__(self, key: str = "") -> None:
        self.keys.append(key)
        self.calls += 1
        self._changed.set()

    async def wait_for(self, count: int, timeout_s: float = 1.0) -> None:
        """Until ``count`` calls have arrived; fails after ``timeout_s`` (the 1 s contract)."""
        async with asyncio.timeout(timeout_s):
            while self.calls < count:
                self._changed.clear()
                await self._changed.wait()


@dataclass
class LatencySample:
    kind: str
    latencies_ms: list[float] = field(default_factory=list)

    def summary(self) -> str:
        values = self.latencies_ms
        return (
            f"{self.kind:>8}: n={len(values)} min={min(values):.1f} ms "
            f"median={statistics.median(values):.1f} ms max={max(values):.1f} ms"
        )


_CHILD = "import sys; from tests.invalidation.child import main; main(sys.argv[1:])"


async def measure_cross_process(
    bus: InvalidationBus, kind: str, params: dict[str, str], count: int
) -> LatencySample:
    """Publish ``count`` keys from ``bus``; a subscriber in another OS process stamps each.

    Between keys, a message on another topic checks filtering across processes,
    and varying pauses sample the subscriber at different points of its cycle.
    """
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _CHILD,
        kind,
        json.dumps(params),
        str(count),
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    sample = LatencySample(kind)
    try:
        assert process.stdout is not None
        ready = await asyncio.wait_for(process.stdout.readline(), 20)
        assert ready == b"ready\n", ready
        for index in range(count):
            await asyncio.sleep(0.03 * index)
            await bus.publish("limits", f"ignored-{index}")
            sent_ns = time.time_ns()
            await bus.publish("keys", f"key-{index}")
            line = await asyncio.wait_for(process.stdout.readline(), 2)
            received = json.loads(line)
            assert received["key"] == f"key-{index}", received
            sample.latencies_ms.append((received["at_ns"] - sent_ns) / 1e6)
        _, stderr = await asyncio.wait_for(process.communicate(), 10)
        assert process.returncode == 0, stderr.decode()
    finally:
        if process.returncode is None:
            process.kill()
            await process.communicate()
    return sample
