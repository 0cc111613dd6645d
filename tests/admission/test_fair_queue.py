"""CapacityGate: fast path, exact capacity, priority, fairness, shedding, cancellation, resizing.

Real asyncio throughout. Ordering is asserted by recording who was granted a
slot when one slot is passed along one release at a time; "never waited" is
asserted by driving the coroutine by hand (``coro.send(None)``), which proves
it finished without suspending. Real-time sleeps only let deadlines pass; no
assertion depends on how long anything took.
"""

from __future__ import annotations

import asyncio
import math

import pytest

from lockgate.admission.fair_queue import (
    CapacityGate,
    Priority,
)
from lockgate.admission.weighted_fair import WeightedFairQueue
from tests.admission.queue_support import Service, assert_idle, full_gate, run_now, until

INTERACTIVE, STANDARD, BATCH = Priority.INTERACTIVE, Priority.STANDARD, Priority.BATCH


async def test_fast_path_returns_without_suspending_and_release_is_idempotent() -> None:
    gate = CapacityGate(2, max_queue=10)
    first = run_now(gate.acquire("a", STANDARD, 1.0, 5.0))
    second = run_now(gate.acquire("b", BATCH, 1.0, 5.0))
    assert (gate.in_flight, gate.queued, gate.stats.admitted) == (2, 0, 2)
    first.release()
    first.release()
    assert gate.in_flight == 1
    with second:
        pass
    second.release()
    assert_idle(gate)


async def test_capacity_is_respected_exactly_under_1000_concurrent_acquirers() -> None:
    gate = CapacityGate(10, max_queue=1000)
    holding = 0
    most = 0

    async def request(i: int) -> None:
        nonlocal holding, most
        with await gate.acquire(f"t{i % 7}", Priority(i % 3), 1.0 + i % 2, math.inf):
            holding += 1
            most = max(most, holding)
            assert gate.in_flight <= 10
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            holding -= 1

    await asyncio.gather(*(request(i) for i in range(1000)))
    assert most == 10
    assert gate.stats.admitted == 1000
    assert gate.stats.waited == 990
    assert_idle(gate)


async def test_slots_go_by_priority_then_fifo_whatever_the_arrival_order() -> None:
    gate, held = full_gate()
    service = Service(gate)
    for label, priority in [
        ("batch-1", BATCH),
        ("standard-1", STANDARD),
        ("interactive-1", INTERACTIVE),
        ("batch-2", BATCH),
        ("interactive-2", INTERACTIVE),
        ("standard-2", STANDARD),
    ]:
        await service.submit(label, "t", priority)
    assert gate.queued_by_priority() == dict.fromkeys(Priority, 2)

    (await service.serve(held, 6)).release()
    assert service.order == [
        "interactive-1", "interactive-2", "standard-1", "standard-2", "batch-1", "batch-2",
    ]  # fmt: skip
    assert_idle(gate)


async def test_fifo_within_a_tenant() -> None:
    gate, held = full_gate()
    service = Service(gate)
    labels = [f"r{i}" for i in range(50)]
    for label in labels:
        await service.submit(label, "t")
    (await service.serve(held, 50)).release()
    assert service.order == labels
    assert_idle(gate)


# -- fairness between tenants ----------------------------------------------------------


async def test_weights_1_and_3_get_a_quarter_and_three_quarters_of_the_grants() -> None:
    gate, held = full_gate()
    service = Service(gate)
    for i in range(400):  # the light tenant's backlog is queued first
        await service.submit(f"light-{i}", "light", weight=1.0)
    for i in range(400):
        await service.submit(f"heavy-{i}", "heavy", weight=3.0)

    held = await service.serve(held, 400)
    light = sum(label.startswith("light") for label in service.order)
    assert 0.23 <= light / 400 <= 0.27
    assert 0.23 <= sum(label.startswith("light") for label in service.order[:100]) / 100 <= 0.27

    await service.close()
    held.release()
    assert_idle(gate)


async def test_equal_weights_alternate() -> None:
    gate, held = full_gate()
    service = Service(gate)
    for i in range(50):
        await service.submit(f"a{i}", "a")
    for i in range(50):
        await service.submit(f"b{i}", "b")
    (await service.serve(held, 100)).release()
    assert [label[0] for label in service.order] == ["a", "b"] * 50
    assert_idle(gate)


async def test_a_late_tenant_is_not_starved_by_a_long_backlog() -> None:
    gate, held = full_gate()
    service = Service(gate)
    for i in range(300):
        await service.submit(f"old-{i}", "old")
    held = await service.serve(held, 100)
    for i in range(10):
        await service.submit(f"late-{i}", "late")

    held = await service.serve(held, 20)
    assert sum(label.startswith("late") for label in service.order[100:]) == 10

    await service.close()
    held.release()
    assert_idle(gate)


async def test_fairness_is_per_priority_class() -> None:
    """A tenant's flood in the batch class costs an interactive tenant nothing."""
    gate, held = full_gate()
    service = Service(gate)
    for i in range(20):
        await service.submit(f"flood-{i}", "flood", BATCH, weight=100.0)
    await service.submit("urgent", "quiet", INTERACTIVE)
    held = await service.serve(held, 1)
    assert service.order == ["urgent"]
    await service.close()
    held.release()
    assert_idle(gate)


# -- shedding --------------------------------------------------------------------------


async def test_growing_capacity_wakes_exactly_the_new_number_of_waiters() -> None:
    gate = CapacityGate(2, max_queue=20)
    held = [run_now(gate.acquire("a", STANDARD, 1.0, math.inf)) for _ in range(2)]
    service = Service(gate)
    for i in range(10):
        await service.submit(f"w{i}", "b")

    gate.set_capacity(5)
    assert (gate.in_flight, gate.queued) == (5, 7)
    await until(lambda: len(service.order) == 3)
    for _ in range(20):
        await asyncio.sleep(0)
    assert service.order == ["w0", "w1", "w2"]

    await service.close()
    for slot in held:
        slot.release()
    assert_idle(gate)


async def test_shrinking_capacity_lets_in_flight_finish_and_grants_nothing_beyond_it() -> None:
    gate = CapacityGate(5, max_queue=20)
    held = [run_now(gate.acquire("a", STANDARD, 1.0, math.inf)) for _ in range(5)]
    service = Service(gate)
    for i in range(3):
        await service.submit(f"w{i}", "b")

    gate.set_capacity(2)
    assert gate.in_flight == 5  # nobody is interrupted
    for slot in held[:3]:
        slot.release()
    for _ in range(20):
        await asyncio.sleep(0)
    assert (gate.in_flight, gate.queued, service.order) == (2, 3, [])

    held[3].release()  # now below the new capacity: one grant per release
    await until(lambda: len(service.order) == 1)
    assert (gate.in_flight, gate.queued) == (2, 2)

    gate.set_capacity(0)  # every deployment gone: waiters wait (for their deadlines)
    held[4].release()
    (await service.granted.get()).release()
    assert (gate.in_flight, gate.queued) == (0, 2)
    await service.close()
    assert_idle(gate)


# -- validation and the scheduler on its own -------------------------------------------


async def test_invalid_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="capacity"):
        CapacityGate(-1, max_queue=1)
    with pytest.raises(ValueError, match="max_queue_per_tenant"):
        CapacityGate(1, max_queue=1, max_queue_per_tenant=0)
    gate, held = full_gate()
    for weight in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="weight"):
            run_now(gate.acquire("a", STANDARD, weight, math.inf))
    with pytest.raises(ValueError, match="capacity"):
        gate.set_capacity(-1)
    held.release()
    assert_idle(gate)


def test_fractional_weights_share_in_proportion() -> None:
    queue: WeightedFairQueue[str] = WeightedFairQueue()
    for i in range(300):
        queue.push("half", 0.5, f"half-{i}")
        queue.push("one", 1.0, f"one-{i}")
    served = [queue.pop() for _ in range(300)]
    assert sum(item.startswith("half") for item in served) == pytest.approx(100, abs=2)


def test_departed_tenants_do_not_grow_the_schedule_without_bound() -> None:
    """Enqueue-then-cancel churn while nothing is served (e.g. capacity 0) stays bounded."""
    queue: WeightedFairQueue[str] = WeightedFairQueue()
    queue.push("stays", 1.0, "stays")
    for i in range(10_000):
        queue.push(f"t{i}", 1.0, f"item-{i}")
        assert queue.remove(f"item-{i}")
    assert len(queue) == 1
    assert len(queue._heap) <= 64  # white-box: stale entries are compacted away
    assert queue.pop() == "stays"
    with pytest.raises(IndexError):
        queue.pop()
