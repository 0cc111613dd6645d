"""The CloudEvents pusher's durable state: the queue of records to push, and its lease.

**Why a queue and not a time cursor.** Records reach the store in flush order,
not in time order: a journal replayed after an outage or a crash delivers
records from minutes or hours ago. A cursor over ``(occurred_at, record_id)``
would already be past them and skip them for ever. So the flusher's insert puts
the id of every record it *added* into ``usage_push_queue`` in the same
transaction (``UsageRecords.insert_many(queue_for_push=True)``), and the pusher
deletes ids only after the endpoint accepted their events. A restart resumes
with whatever is still queued; nothing is skipped, and an event pushed twice
(the pusher died between the endpoint's answer and the delete) carries the same
deterministic id, so the consumer drops the copy.

**The lease.** One pusher per deployment: every worker runs the task, and only
the holder of the ``usage_push_state`` row's lease pushes. Taking it is one
conditional UPDATE (free, expired, or already ours), so two replicas cannot
both succeed; the holder renews it before each batch. Expiry is judged by the
callers' clocks, which must agree to well within the lease's length (NTP).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from lockgate.store.database import Backend
from lockgate.store.repositories.base import Repository
from lockgate.store.schema_reporting import usage_push_queue as _queue
from lockgate.store.schema_reporting import usage_push_state as _state


class PushQueue(Repository):
    async def take_lease(self, name: str, owner: str, *, now: datetime, ttl_s: float) -> bool:
        """Hold (or keep holding) the lease named ``name`` until ``now + ttl_s``; False
        when another owner holds an unexpired one."""
        insert = pg_insert if self._connector.backend is Backend.POSTGRESQL else sqlite_insert
        create = (
            insert(_state)
            .values(name=name, lease_owner=None, lease_expires_at=None, pushed_events=0)
            .on_conflict_do_nothing(index_elements=[_state.c.name])
        )
        take = (
            update(_state)
            .where(
                _state.c.name == name,
                or_(
                    _state.c.lease_owner.is_(None),
                    _state.c.lease_owner == owner,
                    _state.c.lease_expires_at < now,
                ),
            )
            .values(lease_owner=owner, lease_expires_at=now + timedelta(seconds=ttl_s))
        )
        async with self._connector.connect(write=True) as conn:
            await conn.execute(create)
            result = await conn.execute(take)
        return bool(result.rowcount)

    async def release_lease(self, name: str, owner: str) -> None:
        """Give the lease up (at shutdown), so another replica takes over at once."""
        async with self._connector.connect(write=True) as conn:
            await conn.execute(
                update(_state)
                .where(_state.c.name == name, _state.c.lease_owner == owner)
                .values(lease_owner=None, lease_expires_at=None)
            )

    async def pending(self, limit: int) -> list[str]:
        """Up to ``limit`` queued record ids, in id order (per journal, oldest first)."""
        statement = select(_queue.c.record_id).order_by(_queue.c.record_id).limit(limit)
        async with self._connector.connect(write=False) as conn:
            return [row[0] for row in (await conn.execute(statement)).all()]

    async def mark_pushed(self, name: str, record_ids: Sequence[str], *, now: datetime) -> None:
        """The endpoint accepted these records' events: unqueue them and count them."""
        if not record_ids:
            return
        async with self._connector.connect(write=True) as conn:
            await conn.execute(delete(_queue).where(_queue.c.record_id.in_(record_ids)))
            await conn.execute(
                update(_state)
                .where(_state.c.name == name)
                .values(pushed_events=_state.c.pushed_events + len(record_ids), last_pushed_at=now)
            )

    async def backlog(self) -> int:
        """How many records wait to be pushed."""
        async with self._connector.connect(write=False) as conn:
            return int(await conn.scalar(select(func.count()).select_from(_queue)) or 0)

    async def pushed_events(self, name: str) -> int:
        async with self._connector.connect(write=False) as conn:
            found = await conn.scalar(select(_state.c.pushed_events).where(_state.c.name == name))
        return int(found or 0)
