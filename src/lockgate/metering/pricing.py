"""The price catalogue: what one request costs, in integer micro-units of a currency.

Prices are effective-dated versions. Each ``PriceEntry`` has an ``id`` that is
stored on every record it priced, and an ``effective_from``; a record is priced
by the newest version whose ``effective_from`` is at or before the record's own
time, so adding next month's price never reprices last month's records, and a
journal replayed after a restart charges what the request cost when it ran.

Lookup order for a (model, deployment) at time t: the newest deployment-specific
version in force at t, else the newest model-wide version in force at t, else no
price (cost 0, ``price_id`` None). A deployment override therefore only applies
from its own ``effective_from`` on; before that the model's price does.

Arithmetic is ``Decimal`` throughout. A price per million tokens, in currency
units, is exactly the price of one token in micro-units (10^-6 of the unit), so

    cost_micros = (prompt - cached) * input + cached * cached_input
                  + completion * output + request_fee * 10^6

rounded once, half to even, to a whole micro-unit. The catalogue evaluates it in
integers (each price scaled by a power of ten that makes it whole), which is the
same exact arithmetic as ``Decimal`` at a fraction of the cost; the tests hold
the two equal. Reasoning tokens are part of
``completion_tokens`` in OpenAI's usage, so they are charged as output and never
twice. The request fee is charged only when the request reached an upstream: a
request refused by authentication or admission costs its caller nothing.

A catalogue has one currency: aggregates add costs, and adding euros to dollars
is a bug the catalogue refuses up front rather than a report gets wrong later.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, NamedTuple

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

MICROS_PER_UNIT = Decimal(1_000_000)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_PRICE = Annotated[Decimal, Field(ge=0, allow_inf_nan=False)]


class PriceEntry(BaseModel):
    """One version of one price, as configured (unknown keys are rejected)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:@/-]+$")]
    model: Annotated[str, Field(min_length=1)]
    # None: the model's price on every deployment without an override of its own.
    deployment: str | None = None
    effective_from: AwareDatetime
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] = "USD"
    input_per_million: _PRICE = Decimal(0)
    output_per_million: _PRICE = Decimal(0)
    # None: cached prompt tokens cost the same as the rest of the prompt.
    cached_input_per_million: _PRICE | None = None
    # Per request that reached an upstream, in currency units (not micro-units).
    request_fee: _PRICE = Decimal(0)


class Quote(NamedTuple):
    """The price applied to one record and what it came to."""

    price_id: str | None
    currency: str | None
    cost_micros: int


NO_PRICE = Quote(price_id=None, currency=None, cost_micros=0)


class CatalogueError(ValueError):
    """The catalogue contradicts itself (duplicate ids or versions, mixed currencies)."""


def epoch_us(when: datetime) -> int:
    """An aware datetime as whole microseconds since the epoch (exact, unlike a float)."""
    return (when - _EPOCH) // _MICROSECOND


def _places(value: Decimal) -> int:
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)  # finite: the entry refuses inf and NaN
    return max(-exponent, 0)


class _Scaled:
    """One entry's prices as integers over a common power of ten (exact)."""

    __slots__ = ("cached_input", "divisor", "entry", "fee", "input", "output")

    def __init__(self, entry: PriceEntry) -> None:
        cached = entry.input_per_million
        if entry.cached_input_per_million is not None:
            cached = entry.cached_input_per_million
        fee = entry.request_fee * MICROS_PER_UNIT
        prices = (entry.input_per_million, cached, entry.output_per_million, fee)
        scale = Decimal(10) ** max(_places(p) for p in prices)
        self.entry = entry
        self.divisor = int(scale)
        self.input, self.cached_input, self.output, self.fee = (int(p * scale) for p in prices)

    def cost_micros(
        self, prompt_tokens: int, completion_tokens: int, cached_tokens: int, reached_upstream: bool
    ) -> int:
        cached = min(max(cached_tokens, 0), prompt_tokens)
        scaled = (
            (prompt_tokens - cached) * self.input
            + cached * self.cached_input
            + completion_tokens * self.output
        )
        if reached_upstream:
            scaled += self.fee
        whole, rest = divmod(scaled, self.divisor)
        # Half to even: above half rounds up, exactly half rounds to the even neighbour.
        if 2 * rest > self.divisor or (2 * rest == self.divisor and whole % 2 == 1):
            whole += 1
        return whole


class _Versions:
    """The versions of one (model, deployment) price, oldest first, for bisecting by time."""

    __slots__ = ("entries", "starts")

    def __init__(self, entries: list[PriceEntry]) -> None:
        ordered = sorted(entries, key=lambda e: e.effective_from)
        self.entries = [_Scaled(e) for e in ordered]
        # Integers: bisecting them is several times faster than comparing datetimes.
        self.starts = [epoch_us(e.effective_from) for e in ordered]

    def at(self, when_us: int) -> _Scaled | None:
        index = bisect.bisect_right(self.starts, when_us)
        return self.entries[index - 1] if index else None


class PriceCatalogue:
    """Every price version, indexed for lookup by (model, deployment) and time.

    Built once from configuration; immutable afterwards. Raises ``CatalogueError``
    for duplicate version ids, two versions of one price starting at the same
    instant (which would make the price at that instant ambiguous), or entries in
    more than one currency.
    """

    __slots__ = ("_by_target", "currency")

    def __init__(self, entries: Iterable[PriceEntry] = ()) -> None:
        entries = list(entries)
        ids = [e.id for e in entries]
        duplicate_ids = sorted({i for i in ids if ids.count(i) > 1})
        if duplicate_ids:
            raise CatalogueError(f"price ids must be unique: {', '.join(duplicate_ids)}")
        currencies = sorted({e.currency for e in entries})
        if len(currencies) > 1:
            raise CatalogueError(f"one currency per catalogue, found {', '.join(currencies)}")
        self.currency = currencies[0] if currencies else None
        grouped: dict[tuple[str, str | None], list[PriceEntry]] = {}
        for entry in entries:
            grouped.setdefault((entry.model, entry.deployment), []).append(entry)
        for (model, deployment), versions in grouped.items():
            starts = [v.effective_from for v in versions]
            if len(set(starts)) != len(starts):
                where = f"{model}/{deployment}" if deployment else model
                raise CatalogueError(f"two versions of the price of {where} start at one instant")
        self._by_target = {target: _Versions(v) for target, v in grouped.items()}

    def price_at(self, model: str, deployment: str | None, when: datetime) -> PriceEntry | None:
        """The version in force for ``model`` on ``deployment`` at ``when`` (aware), or None."""
        found = self._scaled_at(model, deployment, epoch_us(when))
        return None if found is None else found.entry

    def _scaled_at(self, model: str, deployment: str | None, when_us: int) -> _Scaled | None:
        """Most specific first: (model, deployment), then the model; a version of a model
        (``chat@v2``, as records name what served them) falls back to the model's price."""
        if deployment is not None:
            override = self._by_target.get((model, deployment))
            if override is not None:
                found = override.at(when_us)
                if found is not None:
                    return found
        model_wide = self._by_target.get((model, None))
        if model_wide is not None:
            found = model_wide.at(when_us)
            if found is not None:
                return found
        name, at, version = model.partition("@")
        if at and version:
            return self._scaled_at(name, deployment, when_us)
        return None

    def quote(
        self,
        *,
        model: str,
        deployment: str | None,
        when: datetime,
        prompt_tokens: int,
        completion_tokens: int,
        cached_tokens: int,
        reached_upstream: bool,
    ) -> Quote:
        """Price one request; ``NO_PRICE`` when the catalogue has no price for it."""
        return self.quote_us(
            model,
            deployment,
            epoch_us(when),
            prompt_tokens,
            completion_tokens,
            cached_tokens,
            reached_upstream,
        )

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
        """``quote`` with the time in epoch microseconds: the flusher's per-record path."""
        scaled = self._scaled_at(model, deployment, when_us)
        if scaled is None:
            return NO_PRICE
        cost = scaled.cost_micros(prompt_tokens, completion_tokens, cached_tokens, reached_upstream)
        return Quote(scaled.entry.id, scaled.entry.currency, cost)


def cost_micros(
    entry: PriceEntry,
    *,
    prompt_tokens: int,
    completion_tokens: int,
    cached_tokens: int,
    reached_upstream: bool,
) -> int:
    """The cost under ``entry`` in whole micro-units (see the module docstring)."""
    return _Scaled(entry).cost_micros(
        prompt_tokens, completion_tokens, cached_tokens, reached_upstream
    )
