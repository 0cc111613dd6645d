"""CapacityGate releases: every slot comes back on success, error and every kind of
cancellation, whenever it lands."""

from __future__ import annotations

import asyncio
import math

import pytest

from lockgate.admission.fair_queue import (
    CapacityGate,
    Overloaded,
    OverShare,
    Priority,
)
from tests.admission.queue_support import Service, assert_idle, full_gate, until

INTERACTIVE, STANDARD, BATCH = Priority.INTERACTIVE, Priority.STANDARD, Priority.BATCH


async def test_the_slot_is_released_on_success_and_on_error() -> None:
    gate = CapacityGate(1, max_queue=10)
    with await gate.acquire("a", STANDARD, 1.0, math.inf):
        assert gate.in_flight == 1
    assert_idle(gate)
    with pytest.raises(RuntimeError), await gate.acquire("a", STANDARD, 1.0, math.inf):
        raise RuntimeError("upstream broke")
    assert_idle(gate)


async def test_a_cancelled_waiter_leaves_the_queue() -> None:
    gate, held = full_gate()
    service = Service(gate)
    await service.submit("gone", "a")
    await service.submit("stays", "b")
    service.tasks["gone"].cancel()
    with pytest.raises(asyncio.CancelledError):
        await service.tasks["gone"]
    assert (gate.queued, gate.stats.cancelled) == (1, 1)

    (await service.serve(held, 1)).release()
    assert service.order == ["stays"]
    assert_idle(gate)


async def test_cancelling_a_holder_after_it_got_its_slot_releases_it() -> None:
    gate, held = full_gate()
    holding = asyncio.Event()

    async def request() -> None:
        with await gate.acquire("a", STANDARD, 1.0, math.inf):
            holding.set()
            await asyncio.Event().wait()  # a long stream, until the client disconnects

    task = asyncio.create_task(request())
    await until(lambda: gate.queued == 1)
    held.release()
    await holding.wait()
    assert gate.in_flight == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert_idle(gate)
    assert gate.stats.cancelled == 0


@pytest.mark.parametrize("has_next_waiter", [True, False])
async def test_cancelled_just_as_the_slot_is_handed_over_passes_it_on(
    has_next_waiter: bool,
) -> None:
    gate, held = full_gate()
    service = Service(gate)
    await service.submit("unlucky", "a")
    if has_next_waiter:
        await service.submit("next", "b")

    held.release()  # the slot is now unlucky's ...
    service.tasks["unlucky"].cancel()  # ... and its client leaves before it resumes
    with pytest.raises(asyncio.CancelledError):
        await service.tasks["unlucky"]
    assert gate.stats.cancelled == 1
    if has_next_waiter:
        (await service.granted.get()).release()
        assert service.order == ["next"]
    assert service.order == (["next"] if has_next_waiter else [])
    assert_idle(gate)


@pytest.mark.parametrize("has_next_waiter", [True, False])
async def test_cancelled_just_before_the_slot_is_handed_over_is_skipped(
    has_next_waiter: bool,
) -> None:
    gate, held = full_gate()
    service = Service(gate)
    await service.submit("unlucky", "a")
    if has_next_waiter:
        await service.submit("next", "b")

    service.tasks["unlucky"].cancel()  # its cleanup has not run yet ...
    held.release()  # ... when the slot frees
    with pytest.raises(asyncio.CancelledError):
        await service.tasks["unlucky"]
    assert gate.stats.cancelled == 1
    if has_next_waiter:
        (await service.granted.get()).release()
    assert service.order == (["next"] if has_next_waiter else [])
    assert_idle(gate)


async def test_shed_then_cancelled_before_resuming_is_counted_once() -> None:
    gate, held = full_gate(max_queue=1)
    service = Service(gate)
    await service.submit("batch", "a", BATCH)
    coro = gate.acquire("b", INTERACTIVE, 1.0, math.inf)
    coro.send(None)  # queued, shedding "batch" whose task has not resumed yet
    service.tasks["batch"].cancel()  # the client leaves too: the cancellation wins
    with pytest.raises(asyncio.CancelledError):
        await service.tasks["batch"]
    assert (gate.stats.shed, gate.stats.cancelled, gate.queued) == (1, 0, 1)

    coro.close()  # a waiter whose coroutine is closed (GeneratorExit) leaves the queue too
    assert (gate.stats.cancelled, gate.queued) == (1, 0)
    held.release()
    assert_idle(gate)


async def test_churn_of_every_kind_leaves_nothing_behind() -> None:
    gate = CapacityGate(3, max_queue=40, max_queue_per_tenant=10)
    outcomes: dict[str, int] = {}
    started = 0

    async def request(i: int) -> None:
        nonlocal started
        started += 1
        priority = Priority(i % 3)
        try:
            deadline_s = 0.001 if i % 7 == 0 else 60.0
            tenant = f"t{i % 5}" if i % 3 else "hot"  # "hot" exceeds its share of the queue
            with await gate.acquire(tenant, priority, 1.0 + i % 3, deadline_s):
                for _ in range(i % 4):
                    await asyncio.sleep(0)
                if i % 17 == 0:
                    await asyncio.sleep(0.002)  # long enough for some deadlines to pass
                if i % 11 == 0:
                    raise RuntimeError("upstream broke")
            outcome = "ok"
        except Overloaded as error:
            outcome = error.reason
        except OverShare:
            outcome = "over_share"
        except RuntimeError:
            outcome = "error"
        outcomes[outcome] = outcomes.get(outcome, 0) + 1

    tasks = [asyncio.create_task(request(i)) for i in range(400)]
    for i, task in enumerate(tasks):
        if i % 13 == 0:
            task.cancel()
        if i % 50 == 0:
            await asyncio.sleep(0)
    await asyncio.gather(*tasks, return_exceptions=True)
    assert_idle(gate)
    assert outcomes["ok"] > 0
    assert outcomes["error"] > 0
    assert set(outcomes) >= {"shed", "queue_full", "over_share"}  # "deadline": timing-dependent
    # Every acquire that began ended exactly one way.
    stats = gate.stats
    rejected = stats.queue_full + stats.deadline + stats.shed + stats.over_share
    assert stats.admitted + rejected + stats.cancelled == started


# -- resizing --------------------------------------------------------------------------
