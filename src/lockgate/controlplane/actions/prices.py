"""Adding price versions at runtime: audited, announced to every worker, never retroactive.

A version is added, never edited or deleted: records keep the id of the version
that priced them. The rules, and why:

* ``effective_from`` at least ``PRICE_LEAD_S`` (60 s) after now: a version that
  started in the past would reprice records still waiting in a journal but not
  those already flushed, so two records of the same minute would be charged
  differently; and the lead is what lets every worker's catalogue price every
  record exactly (``metering/live_prices.py``).
* The catalogue's one currency (the config's, else the first stored version's):
  reports add costs, and euros plus dollars is not a number.
* Not the same (model, deployment, instant) as a config version: the config
  would win, and the admin's version would silently do nothing.

The operator commands and the admin API both come here.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from lockgate.controlplane.actions.base import Actor, audit
from lockgate.errors import ClientError
from lockgate.invalidation.bus import InvalidationBus
from lockgate.metering.live_prices import PRICE_LEAD_S, TOPIC_PRICES
from lockgate.metering.pricing import PriceEntry
from lockgate.store.columns import new_id, utc_now
from lockgate.store.repositories.prices import PriceVersion
from lockgate.store.store import Store


class PriceNotAllowed(ClientError):
    """The version would be retroactive, or in another currency than the catalogue's."""

    status = 422
    code = "price_not_allowed"


class PriceVersionExists(ClientError):
    """Another version of the same price starts at the same instant."""

    status = 409
    code = "price_version_exists"


def price_summary(entry: PriceEntry) -> dict[str, Any]:
    """A version as the audit log and the admin API show it (decimals as text)."""

    def decimal(value: Decimal | None) -> str | None:
        return None if value is None else str(value)

    return {
        "id": entry.id,
        "model": entry.model,
        "deployment": entry.deployment,
        "effective_from": entry.effective_from.isoformat(),
        "currency": entry.currency,
        "input_per_million": decimal(entry.input_per_million),
        "output_per_million": decimal(entry.output_per_million),
        "cached_input_per_million": decimal(entry.cached_input_per_million),
        "request_fee": decimal(entry.request_fee),
    }


class PriceActions:
    """Built once per process with the store, the invalidation bus and the config's prices."""

    def __init__(
        self,
        store: Store,
        bus: InvalidationBus,
        config_prices: Sequence[PriceEntry],
        *,
        lead_s: float = PRICE_LEAD_S,
    ) -> None:
        self._store = store
        self._bus = bus
        self._config = tuple(config_prices)
        self._lead_s = lead_s

    @property
    def config_prices(self) -> tuple[PriceEntry, ...]:
        return self._config

    async def add_price(
        self,
        actor: Actor,
        *,
        model: str,
        deployment: str | None,
        effective_from: datetime,
        currency: str | None,
        input_per_million: Decimal,
        output_per_million: Decimal,
        cached_input_per_million: Decimal | None = None,
        request_fee: Decimal = Decimal(0),
    ) -> PriceVersion:
        """Add a version, audit it, and tell every worker to reload its catalogue.

        ``currency`` None: the catalogue's (USD for the first price of all). Raises
        ``PriceNotAllowed``, ``PriceVersionExists``, ``ValueError`` for values a
        price cannot have, ``InvalidationUnavailable`` after the commit if the
        workers could not be told (they reload within ``refresh_s`` anyway).
        """
        earliest = utc_now() + timedelta(seconds=self._lead_s)
        if effective_from < earliest:
            raise PriceNotAllowed(
                f"effective_from must be at least {self._lead_s:g} s from now (at or after "
                f"{earliest.isoformat(timespec='seconds')}): prices are never retroactive",
                param="effective_from",
            )
        stored = await self._store.usage.prices.all_entries()
        catalogue_currency = next((e.currency for e in (*self._config, *stored)), None)
        currency = currency or catalogue_currency or "USD"
        if catalogue_currency is not None and currency != catalogue_currency:
            raise PriceNotAllowed(
                f"the price catalogue is in {catalogue_currency}; one currency per catalogue",
                param="currency",
            )
        entry = PriceEntry(
            id=new_id("price"),
            model=model,
            deployment=deployment,
            effective_from=effective_from,
            currency=currency,
            input_per_million=input_per_million,
            output_per_million=output_per_million,
            cached_input_per_million=cached_input_per_million,
            request_fee=request_fee,
        )
        start = (entry.model, entry.deployment, entry.effective_from)
        if any((e.model, e.deployment, e.effective_from) == start for e in self._config):
            raise PriceVersionExists(
                "the config has a version of this price starting at that instant",
                param="effective_from",
            )
        async with self._store.transaction() as tx:
            version = await tx.usage.prices.add(entry, created_by=actor.id)
            await audit(tx, actor, "price.add", "price", entry.id, None, after=price_summary(entry))
        await self._bus.publish(TOPIC_PRICES, entry.id)
        return version
