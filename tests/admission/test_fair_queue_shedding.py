"""CapacityGate shedding: a full queue, displacement by priority, per-tenant shares,
deadlines, and the Retry-After it computes."""

from __future__ import annotations

import math

import pytest

from lockgate.admission.fair_queue import (
    CapacityGate,
    Overloaded,
    OverShare,
    Priority,
)
from tests.admission.queue_support import Clock, Service, assert_idle, full_gate, run_now, until

INTERACTIVE, STANDARD, BATCH = Priority.INTERACTIVE, Priority.STANDARD, Priority.BATCH


async def test_full_queue_rejects_at_once_with_queue_full() -> None:
    gate, held = full_gate(max_queue=2)
    service = Service(gate)
    await service.submit("w1", "a")
    await service.submit("w2", "b")

    with pytest.raises(Overloaded) as rejected:
        run_now(gate.acquire("c", STANDARD, 1.0, math.inf))
    assert rejected.value.reason == "queue_full"
    assert rejected.value.retry_after_s >= 1.0
    # Not more urgent than the least urgent waiter: no displacement either.
    with pytest.raises(Overloaded, match="queue_full"):
        run_now(gate.acquire("c", BATCH, 1.0, math.inf))
    assert (gate.queued, gate.stats.queue_full) == (2, 2)

    (await service.serve(held, 2)).release()
    assert service.order == ["w1", "w2"]
    assert_idle(gate)


async def test_more_urgent_requests_displace_the_newest_least_urgent_waiter() -> None:
    gate, held = full_gate(max_queue=3)
    service = Service(gate)
    await service.submit("batch-old", "a", BATCH)
    await service.submit("batch-new", "b", BATCH)
    await service.submit("standard", "c", STANDARD)

    await service.submit("interactive", "d", INTERACTIVE)
    with pytest.raises(Overloaded) as shed:
        await service.tasks["batch-new"]
    assert shed.value.reason == "shed"
    assert shed.value.retry_after_s >= 1.0
    assert gate.queued_by_priority() == {INTERACTIVE: 1, STANDARD: 1, BATCH: 1}

    await service.submit("standard-2", "e", STANDARD)  # sheds the last batch waiter
    with pytest.raises(Overloaded, match="shed"):
        await service.tasks["batch-old"]
    await service.submit("interactive-2", "f", INTERACTIVE)  # then standard, newest first
    with pytest.raises(Overloaded, match="shed"):
        await service.tasks["standard-2"]
    with pytest.raises(Overloaded, match="queue_full"):  # nothing less urgent than standard left
        run_now(gate.acquire("g", STANDARD, 1.0, math.inf))
    assert gate.stats.shed == 3

    (await service.serve(held, 3)).release()
    assert service.order == ["interactive", "interactive-2", "standard"]
    assert_idle(gate)


async def test_tenant_over_its_queue_share_gets_over_share_and_others_still_queue() -> None:
    gate, held = full_gate(max_queue=10, max_queue_per_tenant=2)
    service = Service(gate)
    await service.submit("a1", "a")
    await service.submit("a2", "a", BATCH)

    with pytest.raises(OverShare) as over:
        run_now(gate.acquire("a", INTERACTIVE, 1.0, math.inf))
    assert over.value.retry_after_s >= 1.0
    await service.submit("b1", "b")
    assert (gate.queued, gate.stats.over_share) == (3, 1)

    held = await service.serve(held, 1)  # a1 leaves the queue: a has room again
    await service.submit("a3", "a")
    (await service.serve(held, 3)).release()
    assert service.order == ["a1", "b1", "a3", "a2"]
    assert_idle(gate)


async def test_waiting_past_the_deadline_raises_deadline() -> None:
    gate, held = full_gate()
    service = Service(gate)
    await service.submit("patient", "a")
    await service.submit("hurried", "b", deadline_s=0.01)
    await service.submit("patient-2", "a")

    with pytest.raises(Overloaded) as expired:
        await service.tasks["hurried"]
    assert expired.value.reason == "deadline"
    assert (gate.queued, gate.stats.deadline) == (2, 1)

    (await service.serve(held, 2)).release()
    assert service.order == ["patient", "patient-2"]
    assert_idle(gate)


async def test_no_time_to_wait_is_a_deadline_at_once_and_sheds_nobody() -> None:
    gate, held = full_gate(max_queue=1)
    service = Service(gate)
    await service.submit("batch", "a", BATCH)
    with pytest.raises(Overloaded, match="deadline"):
        run_now(gate.acquire("b", INTERACTIVE, 1.0, 0.0))
    assert gate.queued == 1
    await service.close()
    held.release()
    assert_idle(gate)


async def test_retry_after_is_the_queue_drain_time_from_recent_hold_times() -> None:
    clock = Clock()
    gate = CapacityGate(2, max_queue=3, clock=clock)
    slot = run_now(gate.acquire("a", STANDARD, 1.0, math.inf))
    clock.now += 8.0
    slot.release()  # the first hold time is taken as the mean: 8 s
    held = [run_now(gate.acquire("a", STANDARD, 1.0, math.inf)) for _ in range(2)]
    service = Service(gate)
    for i in range(3):
        await service.submit(f"w{i}", "a")

    with pytest.raises(Overloaded) as rejected:
        run_now(gate.acquire("b", STANDARD, 1.0, math.inf))
    assert rejected.value.retry_after_s == pytest.approx((3 + 1) * 8.0 / 2)

    clock.now += 3.0  # both held slots were held 3 s: mean 8 -> 7.5 -> 7.05
    for slot in held:
        slot.release()
    with pytest.raises(Overloaded) as no_time:  # one waiter left ahead, two slots
        run_now(gate.acquire("b", STANDARD, 1.0, 0.0))
    assert no_time.value.retry_after_s == pytest.approx((1 + 1) * 7.05 / 2)
    assert gate.stats.wait_s_total == 0.0  # granted, but not yet resumed
    await until(lambda: gate.stats.waited == 2)
    assert gate.stats.wait_s_total == pytest.approx(2 * 3.0)
    await service.close()
    assert_idle(gate)


async def test_retry_after_is_at_least_a_second_and_at_most_a_minute() -> None:
    clock = Clock()
    gate = CapacityGate(1, max_queue=0, clock=clock)
    slot = run_now(gate.acquire("a", STANDARD, 1.0, math.inf))
    clock.now += 0.001
    slot.release()
    slot = run_now(gate.acquire("a", STANDARD, 1.0, math.inf))
    with pytest.raises(Overloaded) as quick:
        run_now(gate.acquire("b", STANDARD, 1.0, math.inf))
    assert quick.value.retry_after_s == 1.0

    clock.now += 10_000.0  # one very long stream
    slot.release()
    slot = run_now(gate.acquire("a", STANDARD, 1.0, math.inf))
    with pytest.raises(Overloaded) as slow:
        run_now(gate.acquire("b", STANDARD, 1.0, math.inf))
    assert slow.value.retry_after_s == 60.0
    slot.release()
    assert_idle(gate)


# -- releasing on success, error and cancellation --------------------------------------
