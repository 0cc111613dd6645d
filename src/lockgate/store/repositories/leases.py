"""Named leases: which process runs a deployment's single-instance background work.

A lease row names its holder and an expiry. ``acquire`` takes it when it is
free, expired, or already ours (which renews it), in one conditional
statement, so of several replicas asking at once exactly one holds it. The
store rather than Redis holds leases because every deployment has a store
(embedded ones have no Redis), and the work they guard is store work anyway.

Times are the callers' wall clocks: replicas must agree within a fraction of
the lease TTL (NTP does far better). Work guarded by a lease must still be
safe if two holders overlap briefly (a paused process whose lease expired):
the budget evaluator and the deliverer are (see their modules).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, or_, update

from lockgate.store.columns import as_utc
from lockgate.store.repositories.base import Repository
from lockgate.store.repositories.budgets import insert_ignoring_duplicates
from lockgate.store.schema_billing import background_leases as _t


class Leases(Repository):
    async def acquire(self, name: str, *, holder: str, now: datetime, until: datetime) -> bool:
        """Hold (or renew) lease ``name`` until ``until``; False if another holder has it."""
        renew = (
            update(_t)
            .where(_t.c.name == name, or_(_t.c.holder == holder, _t.c.expires_at <= as_utc(now)))
            .values(holder=holder, expires_at=as_utc(until))
            .returning(_t.c.name)
        )
        create = (
            insert_ignoring_duplicates(self._connector.backend, _t)
            .values(name=name, holder=holder, expires_at=as_utc(until))
            .returning(_t.c.name)
        )
        async with self._connector.connect(write=True) as conn:
            if (await conn.execute(renew)).first() is not None:
                return True
            return (await conn.execute(create)).first() is not None

    async def release(self, name: str, *, holder: str) -> None:
        """Give the lease up (if still ours), so another process need not wait out the TTL."""
        async with self._connector.connect(write=True) as conn:
            await conn.execute(delete(_t).where(_t.c.name == name, _t.c.holder == holder))
