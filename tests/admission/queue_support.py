"""Shared pieces of the CapacityGate tests: a fake clock, a service that holds slots."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from lockgate.admission.fair_queue import (
    CapacityGate,
    Priority,
    Slot,
)

INTERACTIVE, STANDARD, BATCH = Priority.INTERACTIVE, Priority.STANDARD, Priority.BATCH


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def run_now(coro: Coroutine[Any, Any, Slot]) -> Slot:
    """Run ``coro`` to its end without the event loop; fail if it would have waited."""
    try:
        coro.send(None)
    except StopIteration as done:
        slot = done.value
        assert isinstance(slot, Slot)
        return slot
    coro.close()
    pytest.fail("acquire suspended")


async def until(condition: Callable[[], bool]) -> None:
    """Let other tasks run until ``condition`` holds (bounded in loop iterations, not time)."""
    for _ in range(10_000):
        if condition():
            return
        await asyncio.sleep(0)
    pytest.fail("condition never held")


class Service:
    """Waiter tasks that record, in order, which of them got a slot."""

    def __init__(self, gate: CapacityGate) -> None:
        self.gate = gate
        self.order: list[str] = []
        self.granted: asyncio.Queue[Slot] = asyncio.Queue()
        self.tasks: dict[str, asyncio.Task[None]] = {}

    async def submit(
        self,
        label: str,
        tenant: str,
        priority: Priority = STANDARD,
        weight: float = 1.0,
        deadline_s: float = math.inf,
    ) -> None:
        """Start a waiter and return once it is queued (so submission order is arrival order)."""
        started = False

        async def wait() -> None:
            nonlocal started
            started = True  # acquire() queues before it first suspends
            slot = await self.gate.acquire(tenant, priority, weight, deadline_s)
            self.order.append(label)
            self.granted.put_nowait(slot)

        self.tasks[label] = asyncio.create_task(wait())
        await until(lambda: started)

    async def serve(self, held: Slot, grants: int) -> Slot:
        """Release ``held``, then each newly granted slot, ``grants`` times; return the last."""
        for _ in range(grants):
            held.release()
            held = await self.granted.get()
        return held

    async def close(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        while not self.granted.empty():
            self.granted.get_nowait().release()


def full_gate(
    max_queue: int = 1000, max_queue_per_tenant: int | None = None
) -> tuple[CapacityGate, Slot]:
    """A gate of capacity 1 whose slot is taken (by the returned one)."""
    gate = CapacityGate(1, max_queue=max_queue, max_queue_per_tenant=max_queue_per_tenant)
    return gate, run_now(gate.acquire("holder", STANDARD, 1.0, math.inf))


def assert_idle(gate: CapacityGate) -> None:
    assert (gate.in_flight, gate.queued) == (0, 0)
    assert gate.queued_by_priority() == dict.fromkeys(Priority, 0)


# -- fast path and capacity ------------------------------------------------------------
