"""``LivePriceCatalogue``: config prices plus the admin API's, current on every worker.

Two sources, one timeline. Config prices (``metering.prices``) are fixed for the
life of the process; admin prices (``store.usage.prices``, added through the
admin API or ``lockgate prices add``) arrive while it runs. Both are versions of
the same prices: a record is priced by the newest version in force at its time,
whichever source it came from. Where they collide — the same version id, or two
versions of one (model, deployment) starting at the same instant, which the
admin API refuses but a later config edit can create — the config's version
wins (config is the reviewed, version-controlled source) and the store's is
ignored with a warning. Store versions in another currency than the config's
are ignored the same way (a catalogue has one currency).

**Why every record is priced right, not "within seconds".** An admin version
must start at least ``PRICE_LEAD_S`` after it is added (the action enforces
it). A catalogue loaded at wall-clock time L therefore holds every version that
can apply to a record from before L + ``PRICE_LEAD_S`` (less a margin for clock
skew between replicas and for the add's own transaction). Records are priced
by the flusher, shortly after they happened; one whose time is past that
horizon is not priced with what may be an old catalogue: ``quote_us`` raises
``PricesNotCurrent`` (a ``StoreUnavailable``), the flusher keeps the batch in
the journal and retries, and the reload it triggered makes the next try
succeed. In practice the catalogue reloads long before: at once when the
invalidation bus says prices changed (``TOPIC_PRICES``), and every
``refresh_s`` regardless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Final, Protocol

from lockgate.metering.pricing import CatalogueError, PriceCatalogue, PriceEntry, Quote
from lockgate.store.errors import StoreError, StoreUnavailable

log = logging.getLogger(__name__)

# The invalidation topic on which a price change is announced (key: the version id).
TOPIC_PRICES: Final = "prices"
# An admin price version starts at least this long after it is added.
PRICE_LEAD_S: Final = 60.0
# Of the lead, what a loaded catalogue does not count on: clock skew between
# replicas, and the adding transaction's own duration.
_SKEW_MARGIN_S: Final = 15.0
_RETRY_S: Final = 1.0


class PriceSource(Protocol):
    """Where admin prices are stored: ``store.usage.prices``."""

    async def all_entries(self) -> Sequence[PriceEntry]: ...


class PricesNotCurrent(StoreUnavailable):
    """A record is newer than the loaded catalogue can vouch for; retry after a reload."""


def merge(config: Sequence[PriceEntry], stored: Iterable[PriceEntry]) -> PriceCatalogue:
    """One catalogue of both sources; the config wins collisions (module docstring).

    Raises ``CatalogueError`` only if the config itself is inconsistent.
    """
    ids = {e.id for e in config}
    starts = {(e.model, e.deployment, e.effective_from) for e in config}
    currency = next((e.currency for e in config), None)
    entries = list(config)
    for entry in stored:
        if currency is None:
            currency = entry.currency
        clash = (
            entry.id in ids
            or (entry.model, entry.deployment, entry.effective_from) in starts
            or entry.currency != currency
        )
        if clash:
            log.warning(
                "price version %s from the admin API is ignored: it collides with the "
                "config's prices (same id, same start, or another currency)",
                entry.id,
            )
            continue
        ids.add(entry.id)
        starts.add((entry.model, entry.deployment, entry.effective_from))
        entries.append(entry)
    return PriceCatalogue(entries)


class LivePriceCatalogue(PriceCatalogue):
    """A ``PriceCatalogue`` that reloads the admin prices while the process runs.

    ``start`` loads them (raises ``StoreError`` if the store cannot be read) and
    starts the reload task; ``invalidate`` is the bus handler (cheap, sync);
    ``close`` stops the task. Lookups read one attribute swapped whole by a reload,
    so a quote never sees half of an old catalogue and half of a new one.
    """

    __slots__ = (
        "_clock",
        "_config",
        "_lead_s",
        "_refresh_s",
        "_source",
        "_stale",
        "_task",
        "_valid_until_us",
    )

    def __init__(
        self,
        config: Sequence[PriceEntry],
        source: PriceSource,
        *,
        refresh_s: float = 20.0,
        lead_s: float = PRICE_LEAD_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(config)  # validates the config alone: its errors stop start-up
        self._config = tuple(config)
        self._source = source
        self._refresh_s = refresh_s
        self._lead_s = lead_s
        self._clock = clock
        self._valid_until_us = 0  # nothing vouched for until the first load
        self._stale = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def config_entries(self) -> tuple[PriceEntry, ...]:
        """The config's versions (the admin API checks new versions against them)."""
        return self._config

    async def start(self) -> None:
        await self.reload()
        self._task = asyncio.create_task(self._run(), name="price-catalogue-reload")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def invalidate(self, _key: str = "") -> None:
        """Reload soon (the invalidation bus handler; also on reconnect)."""
        self._stale.set()

    async def reload(self) -> None:
        """Read the admin prices and swap the index in. Raises ``StoreError``."""
        started = self._clock()
        stored = await self._source.all_entries()
        try:
            merged = merge(self._config, stored)
        except CatalogueError as error:  # two admin versions that contradict each other
            log.error("admin price versions are inconsistent, using the config's only: %s", error)
            merged = PriceCatalogue(self._config)
        self._by_target, self.currency = merged._by_target, merged.currency
        horizon_s = started + self._lead_s - _SKEW_MARGIN_S
        self._valid_until_us = int(horizon_s * 1_000_000)

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stale.wait(), self._refresh_s)
            self._stale.clear()
            try:
                await self.reload()
            except StoreError as error:
                log.warning("cannot reload prices (%s); retrying", error)
                await asyncio.sleep(_RETRY_S)
                self._stale.set()

    def quote_us(
        self,
        model: str,
        deployment: str | None,
        when_us: int,
        prompt_tokens: int,
        completion_tokens: int,
        cached_tokens: int,
        reached_upstream: bool,
    ) -> Quote:
        if when_us >= self._valid_until_us:
            self._stale.set()
            raise PricesNotCurrent("the price catalogue is being reloaded")
        return super().quote_us(
            model,
            deployment,
            when_us,
            prompt_tokens,
            completion_tokens,
            cached_tokens,
            reached_upstream,
        )
