"""The saturation queue: in-flight slots for one model, and the queue in front of them.

When every deployment of a model is busy (its in-flight requests at the sum of
the deployments' configured capacities), sending more only lengthens every
request's time to first token on the engine. A ``CapacityGate`` makes the new
request wait here instead, in a bounded queue and with a deadline, and sheds
it fast when it cannot be served.

**Order of service.** When a slot frees it goes straight to the next waiter
(never back to the pool first, so a newcomer cannot overtake the queue):

1. the most urgent ``Priority`` class with waiters. Strict priority: batch
   work waits as long as interactive work is queued; its deadline bounds that;
2. within the class, weighted fair queueing across tenants
   (``weighted_fair.py`` says why WFQ rather than deficit round robin);
3. first in, first out within a tenant.

**Shedding.** A tenant over ``max_queue_per_tenant`` waiters gets ``OverShare``
(its own doing: 429). A full queue rejects a request with
``Overloaded("queue_full")`` before it ever waits, unless a *less* urgent
waiter is queued: then the newest waiter of the least urgent class is shed
(``Overloaded("shed")``) to make room. Newest, because it has invested the
least waiting and a tenant flooding the queue is the likeliest to own it.
A waiter still queued after ``deadline_s`` gets ``Overloaded("deadline")``.

**Retry-After.** Slots free at about ``capacity / mean hold time`` per second
(Little's law), so the queue ahead plus the retrying request itself drains in
``(queued + 1) * mean_hold_s / capacity``. The mean hold time is an
exponentially weighted moving average (alpha 0.1, about the last ten
releases) of how long slots were held; before the first release it is taken
as 1 s. The estimate is clamped to [1 s, 60 s]: never "retry now" for a
saturated model, and never an hour because one stream ran long. The HTTP edge
rounds it up to whole seconds.

**Cancellation.** A client disconnect cancels the waiting task: it leaves the
queue at once. If a slot was handed to it in the same loop iteration, the
slot is passed on to the next waiter, so no slot leaks.

**Time.** ``clock`` only measures slot hold times and queue waits (inject a
fake one for deterministic tests). Deadlines are event-loop timers, so they
fire even when no slot is ever released.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from types import TracebackType
from typing import Literal

from lockgate.admission.weighted_fair import WeightedFairQueue

ShedReason = Literal["queue_full", "deadline", "shed"]

_HOLD_EWMA_ALPHA = 0.1
_DEFAULT_HOLD_S = 1.0
_MIN_RETRY_AFTER_S = 1.0
_MAX_RETRY_AFTER_S = 60.0


class Priority(IntEnum):
    """How urgent a request is; a lower value is served first."""

    INTERACTIVE = 0
    STANDARD = 1
    BATCH = 2


class Overloaded(Exception):
    """The model is saturated and this request cannot be served in time (503 + Retry-After).

    ``reason``: ``queue_full`` (rejected without waiting), ``deadline`` (waited
    ``deadline_s`` in vain) or ``shed`` (displaced by a more urgent request).
    """

    def __init__(self, reason: ShedReason, retry_after_s: float) -> None:
        super().__init__(f"model overloaded ({reason}); retry after {retry_after_s:.0f}s")
        self.reason: ShedReason = reason
        self.retry_after_s = retry_after_s


class OverShare(Exception):
    """The tenant already has its maximum number of waiters queued (429 + Retry-After)."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"too many queued requests; retry after {retry_after_s:.0f}s")
        self.retry_after_s = retry_after_s


@dataclass(slots=True)
class GateStats:
    """Running counters for metrics; read them, never reset them (exporters take deltas)."""

    admitted: int = 0  # slots granted to callers: at once or after waiting
    waited: int = 0  # of those, granted after waiting in the queue
    wait_s_total: float = 0.0  # summed queue wait of the ``waited`` ones
    queue_full: int = 0  # Overloaded("queue_full")
    deadline: int = 0  # Overloaded("deadline")
    shed: int = 0  # Overloaded("shed")
    over_share: int = 0  # OverShare
    cancelled: int = 0  # waiters whose task was cancelled before it got a slot


class Slot:
    """One in-flight slot. ``release()`` it exactly when the request ends; more calls are no-ops.

    Also a context manager: ``with await gate.acquire(...):`` releases on
    success, error and cancellation alike.
    """

    __slots__ = ("_gate", "granted_at")

    def __init__(self, gate: CapacityGate, granted_at: float) -> None:
        self._gate: CapacityGate | None = gate
        self.granted_at = granted_at

    def release(self) -> None:
        """Hand the slot to the next waiter the scheduler picks, or back to the pool."""
        gate = self._gate
        if gate is not None:
            self._gate = None
            gate._release(self.granted_at)

    def _pass_on(self) -> None:
        """Release a slot that was never used (its task was cancelled as it was granted)."""
        gate = self._gate
        if gate is not None:
            self._gate = None
            gate._release(None)

    def __enter__(self) -> Slot:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()


class _Waiter:
    __slots__ = ("enqueued_at", "future", "priority", "tenant", "timer")

    def __init__(
        self, future: asyncio.Future[Slot], tenant: str, priority: Priority, enqueued_at: float
    ) -> None:
        self.future = future
        self.tenant = tenant
        self.priority = priority
        self.enqueued_at = enqueued_at
        self.timer: asyncio.TimerHandle | None = None


class CapacityGate:
    """In-flight slots for one model (capacity: the sum of its deployments'), and the queue.

    One per model per worker process, used from one event loop. Invariant: a
    request waits only while every slot is taken, so ``acquire`` never queues
    behind a free slot and ``release`` never idles a slot someone waits for.
    """

    def __init__(
        self,
        capacity: int,
        *,
        max_queue: int,
        max_queue_per_tenant: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if capacity < 0 or max_queue < 0:
            raise ValueError("capacity and max_queue must be >= 0")
        if max_queue_per_tenant is not None and max_queue_per_tenant < 1:
            raise ValueError("max_queue_per_tenant must be >= 1 (or None: no per-tenant cap)")
        self._capacity = capacity
        self._max_queue = max_queue
        self._max_queue_per_tenant = max_queue_per_tenant
        self._clock = clock
        self._in_flight = 0
        self._queued = 0
        self._queued_by_tenant: dict[str, int] = {}
        # One fair queue per priority class, indexed by the priority's value.
        self._classes: tuple[WeightedFairQueue[_Waiter], ...] = tuple(
            WeightedFairQueue[_Waiter]() for _ in Priority
        )
        self._mean_hold_s: float | None = None
        self.stats = GateStats()

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def queued(self) -> int:
        return self._queued

    def queued_by_priority(self) -> dict[Priority, int]:
        return {priority: len(self._classes[priority]) for priority in Priority}

    def set_capacity(self, capacity: int) -> None:
        """Deployments came or went. Growing wakes that many waiters at once; shrinking
        lets the requests in flight finish and grants nothing until they are below it."""
        if capacity < 0:
            raise ValueError("capacity must be >= 0")
        self._capacity = capacity
        now = self._clock()
        while self._in_flight < capacity and self._queued and self._hand_over(now):
            self._in_flight += 1

    async def acquire(
        self, tenant: str, priority: Priority, weight: float, deadline_s: float
    ) -> Slot:
        """A slot for one request of ``tenant``, after waiting at most ``deadline_s`` seconds.

        ``weight`` (> 0) is the tenant's share against the other tenants of its
        priority class. Returns without suspending when a slot is free.
        ``deadline_s=math.inf`` waits as long as it takes (tests, internal callers).
        Raises ``OverShare`` or ``Overloaded("queue_full" | "deadline")`` without
        suspending when the request cannot even wait, and ``Overloaded("deadline"
        | "shed")`` when it waited in vain.
        """
        if self._queued == 0 and self._in_flight < self._capacity:
            self._in_flight += 1
            self.stats.admitted += 1
            return Slot(self, self._clock())
        waiter = self._enqueue(tenant, priority, weight, deadline_s)
        try:
            slot = await waiter.future
        except BaseException:
            # Cancellation (client disconnect), or anything else thrown into the wait
            # (GeneratorExit when the coroutine is closed): never leave a waiter or a slot.
            self._abandon(waiter)
            raise
        stats = self.stats
        stats.admitted += 1
        stats.waited += 1
        stats.wait_s_total += slot.granted_at - waiter.enqueued_at
        return slot

    def _enqueue(
        self, tenant: str, priority: Priority, weight: float, deadline_s: float
    ) -> _Waiter:
        if not 0.0 < weight < math.inf:  # also rejects NaN
            raise ValueError(f"weight must be positive and finite, got {weight!r}")
        cap = self._max_queue_per_tenant
        if cap is not None and self._queued_by_tenant.get(tenant, 0) >= cap:
            self.stats.over_share += 1
            raise OverShare(self._retry_after_s())
        if not deadline_s > 0.0:  # no time to wait at all (also NaN)
            self.stats.deadline += 1
            raise Overloaded("deadline", self._retry_after_s())
        if self._queued >= self._max_queue:
            self._make_room(priority)
        loop = asyncio.get_running_loop()
        waiter = _Waiter(loop.create_future(), tenant, priority, self._clock())
        if deadline_s < math.inf:
            waiter.timer = loop.call_later(deadline_s, self._expire, waiter)
        self._classes[priority].push(tenant, weight, waiter)
        self._queued += 1
        self._queued_by_tenant[tenant] = self._queued_by_tenant.get(tenant, 0) + 1
        return waiter

    def _make_room(self, priority: Priority) -> None:
        """Shed the newest waiter of the least urgent class below ``priority``, or refuse."""
        for lower in reversed(Priority):
            if lower <= priority:
                break
            queue = self._classes[lower]
            if queue:
                victim = queue.pop_newest()
                self._forget(victim)
                self._fail(victim, "shed")
                return
        self.stats.queue_full += 1
        raise Overloaded("queue_full", self._retry_after_s())

    def _expire(self, waiter: _Waiter) -> None:
        waiter.timer = None  # it has fired: nothing to cancel
        if self._classes[waiter.priority].remove(waiter):
            self._forget(waiter)
            self._fail(waiter, "deadline")

    def _abandon(self, waiter: _Waiter) -> None:
        """The wait was interrupted: leave the queue, or pass on a slot granted meanwhile."""
        future = waiter.future
        if future.cancelled() or not future.done():
            if self._classes[waiter.priority].remove(waiter):
                self._forget(waiter)
                self.stats.cancelled += 1
            # else _hand_over already skipped (and counted) it
        elif future.exception() is None:
            # A slot was handed over in the same loop iteration as the cancellation.
            self.stats.cancelled += 1
            future.result()._pass_on()
        # else: shed or expired just before the cancellation, already counted

    def _forget(self, waiter: _Waiter) -> None:
        """Bookkeeping for a waiter just taken out of its class queue."""
        self._queued -= 1
        left = self._queued_by_tenant[waiter.tenant] - 1
        if left:
            self._queued_by_tenant[waiter.tenant] = left
        else:
            del self._queued_by_tenant[waiter.tenant]
        if waiter.timer is not None:
            waiter.timer.cancel()
            waiter.timer = None

    def _fail(self, waiter: _Waiter, reason: ShedReason) -> None:
        if waiter.future.done():  # cancelled; its task has not run its cleanup yet
            self.stats.cancelled += 1
            return
        if reason == "deadline":
            self.stats.deadline += 1
        else:
            self.stats.shed += 1
        waiter.future.set_exception(Overloaded(reason, self._retry_after_s()))

    def _hand_over(self, now: float) -> bool:
        """Give a slot to the next live waiter; False when nobody (alive) waits."""
        for queue in self._classes:
            while queue:
                waiter = queue.pop()
                self._forget(waiter)
                if waiter.future.done():  # cancelled, cleanup pending: skip it
                    self.stats.cancelled += 1
                    continue
                waiter.future.set_result(Slot(self, now))
                return True
        return False

    def _release(self, granted_at: float | None) -> None:
        """A slot came back (``granted_at`` None: never used, so no hold time to learn)."""
        now = self._clock()
        if granted_at is not None:
            held_s = now - granted_at
            mean = self._mean_hold_s
            self._mean_hold_s = (
                held_s if mean is None else mean + _HOLD_EWMA_ALPHA * (held_s - mean)
            )
        # ``<=``: the releasing slot is still counted, so this means "a slot is free".
        if self._queued and self._in_flight <= self._capacity and self._hand_over(now):
            return  # the slot changed hands; in_flight is unchanged
        self._in_flight -= 1

    def _retry_after_s(self) -> float:
        """How long until a retry could get a slot: the queue ahead drained (module docstring)."""
        hold_s = _DEFAULT_HOLD_S if self._mean_hold_s is None else self._mean_hold_s
        drain_s = (self._queued + 1) * hold_s / max(self._capacity, 1)
        return min(max(drain_s, _MIN_RETRY_AFTER_S), _MAX_RETRY_AFTER_S)
