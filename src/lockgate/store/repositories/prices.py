"""Price versions added through the admin API (config prices never reach the store).

Append-only: there is ``add`` and no update or delete, because records keep the
id of the version that priced them and must keep meaning what they meant. A
change of price is a new version with a later ``effective_from``; the rules on
what may be added (not in the past, one currency) are the admin action's
(``controlplane/actions/prices.py``), so that this module stays storage.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.engine import Row

from lockgate.metering.pricing import PriceEntry
from lockgate.store.columns import utc_now
from lockgate.store.errors import NotFound
from lockgate.store.repositories.base import MAX_PAGE_SIZE, Repository
from lockgate.store.schema_reporting import prices as _t


@dataclass(frozen=True, slots=True)
class PriceVersion:
    """One stored version: the entry the catalogue uses, and who added it when."""

    entry: PriceEntry
    created_at: datetime
    created_by: str


def _to_version(row: Row[Any]) -> PriceVersion:
    cached = row.cached_input_per_million
    entry = PriceEntry(
        id=row.id,
        model=row.model,
        deployment=row.deployment or None,
        effective_from=row.effective_from,
        currency=row.currency,
        input_per_million=Decimal(row.input_per_million),
        output_per_million=Decimal(row.output_per_million),
        cached_input_per_million=None if cached is None else Decimal(cached),
        request_fee=Decimal(row.request_fee),
    )
    return PriceVersion(entry, row.created_at, row.created_by)


class PriceVersions(Repository):
    async def add(self, entry: PriceEntry, *, created_by: str) -> PriceVersion:
        """Store a new version. Raises ``Conflict`` for a taken id, or another version of
        the same (model, deployment) starting at the same instant."""
        cached = entry.cached_input_per_million
        created_at = utc_now()
        values = {
            "id": entry.id,
            "model": entry.model,
            "deployment": entry.deployment or "",
            "effective_from": entry.effective_from,
            "currency": entry.currency,
            "input_per_million": str(entry.input_per_million),
            "output_per_million": str(entry.output_per_million),
            "cached_input_per_million": None if cached is None else str(cached),
            "request_fee": str(entry.request_fee),
            "created_at": created_at,
            "created_by": created_by,
        }
        async with self._connector.connect(write=True) as conn:
            await conn.execute(insert(_t).values(**values))
        return PriceVersion(entry, created_at, created_by)

    async def get(self, price_id: str) -> PriceVersion:
        async with self._connector.connect(write=False) as conn:
            row = (await conn.execute(select(_t).where(_t.c.id == price_id))).first()
        if row is None:
            raise NotFound(f"price {price_id!r} not found")
        return _to_version(row)

    async def list(
        self,
        *,
        model: str | None = None,
        limit: int = MAX_PAGE_SIZE,
        after: str | None = None,
    ) -> Sequence[PriceVersion]:
        """Versions by id (ids start with their creation time: oldest first)."""
        statement = select(_t)
        if model is not None:
            statement = statement.where(_t.c.model == model)
        if after is not None:
            statement = statement.where(_t.c.id > after)
        statement = statement.order_by(_t.c.id).limit(min(max(limit, 1), MAX_PAGE_SIZE))
        async with self._connector.connect(write=False) as conn:
            rows = (await conn.execute(statement)).all()
        return [_to_version(row) for row in rows]

    async def all_entries(self) -> Sequence[PriceEntry]:
        """Every version, for the catalogue (a deployment has tens or hundreds, not more)."""
        async with self._connector.connect(write=False) as conn:
            rows = (await conn.execute(select(_t).order_by(_t.c.id))).all()
        return [_to_version(row).entry for row in rows]
