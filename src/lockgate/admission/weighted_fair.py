"""Weighted fair queueing across tenants: the order in which one priority class is served.

``WeightedFairQueue`` holds the waiters of many tenants. ``pop()`` serves the
tenants in proportion to their weights and each tenant's waiters first in,
first out. It is pure bookkeeping (no asyncio, no clock); ``fair_queue.CapacityGate``
keeps one per priority class.

**Why weighted fair queueing and not deficit round robin.** DRR exists to make
fair queueing O(1) when packets differ in size. Here every request costs the
same, one slot (how long it will hold it is unknown when it is scheduled), so
that advantage disappears, and DRR's drawbacks remain: it serves a tenant's
whole quantum in a row (weights 10:1 give ten grants back to back), and
fractional weights need their quanta scaled. Self-clocked fair queueing
(SCFQ) gives each active tenant a *virtual finish tag*; the smallest tag is
served next and the tenant's tag then grows by ``1 / weight``. That
interleaves tenants as finely as their weights allow, for any positive float
weight, and costs one heap pop and push per grant over the *active tenants*
(not the requests): O(log T).

**Late arrivals.** The virtual time is the tag of the last grant. A tenant
that starts waiting gets the tag ``virtual time + 1 / weight``: it is served
within about one round, however long another tenant's backlog is, and it
cannot bank credit for the time it spent idle. A tenant's state is dropped as
soon as it has no waiters, so idle tenants cost no memory.

**Removal.** Waiters leave early (cancelled, expired, shed). Per-tenant FIFOs
are ``OrderedDict``s (O(1) removal anywhere, O(1) pop at either end); a
tenant whose last waiter left keeps a stale heap entry, skipped when popped,
and the heap is rebuilt once stale entries outnumber live ones, so removal is
amortised O(1) and the heap cannot grow without bound even when nothing is
ever served.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

T = TypeVar("T", bound=Hashable)

# Stale heap entries tolerated beyond the live ones before the heap is rebuilt.
_COMPACT_SLACK = 32


class _Tenant(Generic[T]):
    """One tenant's waiters (oldest first) and its place in the schedule."""

    __slots__ = ("items", "name", "seq", "weight")

    def __init__(self, name: str, weight: float) -> None:
        self.name = name
        self.weight = weight
        self.items: OrderedDict[T, None] = OrderedDict()
        # Sequence number of this tenant's live heap entry; -1 once it left the queue.
        self.seq = -1


class WeightedFairQueue(Generic[T]):
    """Items of many tenants, served by weighted fair share across tenants, FIFO within one.

    Items are compared by identity-or-equality as dict keys: each must be queued
    at most once. A tenant's weight is the one given with its most recent
    ``push`` and applies from its next turn.
    """

    def __init__(self) -> None:
        self._tenants: dict[str, _Tenant[T]] = {}
        # Every queued item in arrival order, with its tenant: newest-first shedding
        # and O(1) removal of any item.
        self._arrivals: OrderedDict[T, _Tenant[T]] = OrderedDict()
        # (virtual finish tag, sequence, tenant); the sequence breaks ties in order of
        # scheduling and never lets the comparison reach the tenant.
        self._heap: list[tuple[float, int, _Tenant[T]]] = []
        self._virtual_time = 0.0
        self._next_seq = 0
        self._stale = 0

    def __len__(self) -> int:
        return len(self._arrivals)

    def __contains__(self, item: T) -> bool:
        return item in self._arrivals

    def push(self, tenant: str, weight: float, item: T) -> None:
        """Queue ``item`` last among ``tenant``'s waiters. ``weight`` must be > 0."""
        if item in self._arrivals:
            raise ValueError("item is already queued")
        state = self._tenants.get(tenant)
        if state is None:
            state = self._tenants[tenant] = _Tenant(tenant, weight)
            self._schedule(state, self._virtual_time + 1.0 / weight)
        else:
            state.weight = weight
        state.items[item] = None
        self._arrivals[item] = state

    def pop(self) -> T:
        """The next item to serve: the oldest of the tenant with the smallest finish tag.

        Raises ``IndexError`` when the queue is empty.
        """
        if not self._arrivals:
            raise IndexError("pop from an empty WeightedFairQueue")
        while True:
            finish_tag, seq, state = heapq.heappop(self._heap)
            if seq == state.seq:
                break
            self._stale -= 1
        self._virtual_time = finish_tag
        item, _ = state.items.popitem(last=False)
        del self._arrivals[item]
        if state.items:
            self._schedule(state, finish_tag + 1.0 / state.weight)
        else:
            # Its heap entry was just popped, so nothing goes stale.
            state.seq = -1
            del self._tenants[state.name]
            if not self._arrivals:
                self._reset()
        return item

    def pop_newest(self) -> T:
        """Remove and return the most recently queued item (whoever's): the one to shed.

        Raises ``KeyError`` when the queue is empty.
        """
        item, state = self._arrivals.popitem(last=True)
        self._drop(item, state)
        return item

    def remove(self, item: T) -> bool:
        """Take ``item`` out wherever it is; False when it was not queued."""
        state = self._arrivals.pop(item, None)
        if state is None:
            return False
        self._drop(item, state)
        return True

    def _drop(self, item: T, state: _Tenant[T]) -> None:
        """Forget ``item`` (already gone from ``_arrivals``); a tenant left empty leaves.

        A tenant keeps its finish tag while it has waiters, so removing its head
        passes the tag on to the next one rather than costing it its turn.
        """
        del state.items[item]
        if state.items:
            return
        del self._tenants[state.name]
        state.seq = -1
        self._stale += 1
        if not self._arrivals:
            self._reset()
        elif self._stale > len(self._tenants) + _COMPACT_SLACK:
            self._heap = [entry for entry in self._heap if entry[1] == entry[2].seq]
            heapq.heapify(self._heap)
            self._stale = 0

    def _schedule(self, state: _Tenant[T], finish_tag: float) -> None:
        state.seq = seq = self._next_seq
        self._next_seq += 1
        heapq.heappush(self._heap, (finish_tag, seq, state))

    def _reset(self) -> None:
        """Nobody waits: start virtual time over, so tags never grow beyond one busy period."""
        self._heap.clear()
        self._stale = 0
        self._virtual_time = 0.0
