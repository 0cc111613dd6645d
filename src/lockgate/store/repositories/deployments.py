"""Runtime deployments (admin-added, engine-registered) and model rollouts.

Liveness is by time: a registration is live while ``expires_at`` is in the
future, so readers need no janitor. ``heartbeat`` moves ``expires_at`` forward
in one statement and reports whether the registration still existed (an engine
whose registration lapsed must register again, so it learns it was gone).
Writers sweep registrations dead for a while (``sweep``), which only keeps the
table small.

Built from any ``Repositories`` (the store, or a transaction) with
``registry_of`` / ``rollouts_of``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, insert, or_, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError

from lockgate.store.columns import new_id, utc_now
from lockgate.store.errors import Conflict, ConflictReason, NotFound, from_integrity_error
from lockgate.store.repositories.base import Repository, json_object
from lockgate.store.schema_registry import model_rollouts as _r
from lockgate.store.schema_registry import runtime_deployments as _t

if TYPE_CHECKING:
    from lockgate.store.store import Repositories

# A registration dead this long is deleted by the next write (it is ignored at once).
SWEEP_AFTER = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class RuntimeDeployment:
    id: str
    model: str  # the entry it serves: a model name, or name@version
    name: str
    base_url: str
    upstream_model: str | None
    capacity: int | None
    weight: float
    tags: Mapping[str, str]
    source: str  # "admin" (until removed) or "engine" (until heartbeats stop)
    registered_by: str
    expires_at: datetime | None
    created_at: datetime
    updated_at: datetime

    def is_live(self, now: datetime) -> bool:
        return self.expires_at is None or self.expires_at > now


@dataclass(frozen=True, slots=True)
class RolloutRecord:
    model: str
    candidate: str
    percent: float
    shadow_percent: float
    is_rolled_back: bool
    reason: str | None
    updated_by: str
    updated_at: datetime


def _deployment(row: Row[Any]) -> RuntimeDeployment:
    return RuntimeDeployment(
        id=row.id,
        model=row.model,
        name=row.name,
        base_url=row.base_url,
        upstream_model=row.upstream_model,
        capacity=row.capacity,
        weight=row.weight,
        tags=dict(row.tags or {}),
        source=row.source,
        registered_by=row.registered_by,
        expires_at=row.expires_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _rollout(row: Row[Any]) -> RolloutRecord:
    return RolloutRecord(
        model=row.model,
        candidate=row.candidate,
        percent=row.percent,
        shadow_percent=row.shadow_percent,
        is_rolled_back=bool(row.is_rolled_back),
        reason=row.reason,
        updated_by=row.updated_by,
        updated_at=row.updated_at,
    )


class RuntimeDeployments(Repository):
    async def put(
        self,
        *,
        model: str,
        name: str,
        base_url: str,
        upstream_model: str | None,
        capacity: int | None,
        weight: float,
        tags: Mapping[str, str],
        source: str,
        registered_by: str,
        expires_at: datetime | None,
    ) -> RuntimeDeployment:
        """Create, or replace the (model, name) deployment of the same ``source``.

        Raises ``Conflict`` when the name is taken by the other source (an engine may
        not replace what an operator added, nor the reverse).
        """
        now = utc_now()
        values = {
            "base_url": base_url,
            "upstream_model": upstream_model,
            "capacity": capacity,
            "weight": weight,
            "tags": json_object(tags),
            "registered_by": registered_by,
            "expires_at": expires_at,
            "updated_at": now,
        }
        async with self._connector.connect(write=True) as conn:
            await conn.execute(delete(_t).where(_t.c.expires_at < now - SWEEP_AFTER))
            found = (
                await conn.execute(select(_t).where(_t.c.model == model, _t.c.name == name))
            ).first()
            if found is not None:
                if found.source != source:
                    raise Conflict(
                        f"deployment {name!r} of {model!r} was added by "
                        f"{'an operator' if found.source == 'admin' else 'an engine'}",
                        reason=ConflictReason.DUPLICATE,
                    )
                statement = update(_t).where(_t.c.id == found.id).values(values)
                row = (await conn.execute(statement.returning(*_t.c))).one()
                return _deployment(row)
            values |= {
                "id": new_id("dep"),
                "model": model,
                "name": name,
                "source": source,
                "created_at": now,
            }
            try:
                async with conn.begin_nested():
                    row = (await conn.execute(insert(_t).values(values).returning(*_t.c))).one()
            except IntegrityError as error:
                raise from_integrity_error(error) from error
        return _deployment(row)

    async def heartbeat(self, model: str, name: str, *, expires_at: datetime) -> bool:
        """Extend a live engine registration; False if there is none (it lapsed)."""
        now = utc_now()
        statement = (
            update(_t)
            .where(
                _t.c.model == model,
                _t.c.name == name,
                _t.c.source == "engine",
                _t.c.expires_at > now,
            )
            .values(expires_at=expires_at, updated_at=now)
        )
        async with self._connector.connect(write=True) as conn:
            result = await conn.execute(statement)
        return bool(result.rowcount)

    async def get(self, model: str, name: str) -> RuntimeDeployment:
        statement = select(_t).where(_t.c.model == model, _t.c.name == name)
        async with self._connector.connect(write=False) as conn:
            row = (await conn.execute(statement)).first()
        if row is None:
            raise NotFound(f"deployment {name!r} of {model!r} not found")
        return _deployment(row)

    async def remove(self, model: str, name: str, *, source: str | None = None) -> bool:
        """Delete it (only if added by ``source``, when given); whether it existed."""
        statement = delete(_t).where(_t.c.model == model, _t.c.name == name)
        if source is not None:
            statement = statement.where(_t.c.source == source)
        async with self._connector.connect(write=True) as conn:
            result = await conn.execute(statement)
        return bool(result.rowcount)

    async def live(self, now: datetime | None = None) -> Sequence[RuntimeDeployment]:
        """Every deployment live at ``now`` (default: the current time), by model and name."""
        moment = now or utc_now()
        statement = (
            select(_t)
            .where(or_(_t.c.expires_at.is_(None), _t.c.expires_at > moment))
            .order_by(_t.c.model, _t.c.name)
        )
        async with self._connector.connect(write=False) as conn:
            return [_deployment(row) for row in await conn.execute(statement)]


class Rollouts(Repository):
    async def put(
        self,
        *,
        model: str,
        candidate: str,
        percent: float,
        shadow_percent: float,
        is_rolled_back: bool,
        reason: str | None,
        updated_by: str,
    ) -> RolloutRecord:
        values = {
            "candidate": candidate,
            "percent": percent,
            "shadow_percent": shadow_percent,
            "is_rolled_back": is_rolled_back,
            "reason": reason,
            "updated_by": updated_by,
            "updated_at": utc_now(),
        }
        async with self._connector.connect(write=True) as conn:
            statement = update(_r).where(_r.c.model == model).values(values).returning(*_r.c)
            row = (await conn.execute(statement)).first()
            if row is None:
                insert_values = {"model": model, **values}
                row = (await conn.execute(insert(_r).values(insert_values).returning(*_r.c))).one()
        return _rollout(row)

    async def roll_back(self, model: str, candidate: str, *, reason: str, by: str) -> bool:
        """Mark the rollout rolled back unless it already is, or its candidate changed;
        whether this call did it (so exactly one of racing workers audits it)."""
        statement = (
            update(_r)
            .where(_r.c.model == model, _r.c.candidate == candidate, _r.c.is_rolled_back.is_(False))
            .values(is_rolled_back=True, reason=reason, updated_by=by, updated_at=utc_now())
        )
        async with self._connector.connect(write=True) as conn:
            result = await conn.execute(statement)
        return bool(result.rowcount)

    async def get(self, model: str) -> RolloutRecord | None:
        async with self._connector.connect(write=False) as conn:
            row = (await conn.execute(select(_r).where(_r.c.model == model))).first()
        return None if row is None else _rollout(row)

    async def all(self) -> Sequence[RolloutRecord]:
        async with self._connector.connect(write=False) as conn:
            return [_rollout(row) for row in await conn.execute(select(_r).order_by(_r.c.model))]


def registry_of(repos: Repositories) -> RuntimeDeployments:
    return repos.deployments


def rollouts_of(repos: Repositories) -> Rollouts:
    return repos.rollouts
