"""``lockgate prices add`` and ``lockgate prices list``.

``add`` goes through ``PriceActions`` like the admin API: the same rules (not
retroactive, one currency, no clash with the config), an audit entry by
``cli:<os user>``, and a message on the invalidation bus so running gateways
reload their catalogue at once.
"""

from __future__ import annotations

import argparse
from decimal import Decimal, InvalidOperation
from typing import Any

from lockgate.controlplane.actions.prices import PriceActions, price_summary
from lockgate.controlplane.commands.errors import UsageError
from lockgate.controlplane.commands.output import Column
from lockgate.controlplane.commands.session import Session
from lockgate.controlplane.commands.usage import parse_time
from lockgate.metering.pricing import PriceEntry

COLUMNS = (
    Column("ID", "id"),
    Column("SOURCE", "source"),
    Column("MODEL", "model"),
    Column("DEPLOYMENT", "deployment"),
    Column("FROM", "effective_from"),
    Column("CUR", "currency"),
    Column("INPUT/M", "input_per_million"),
    Column("CACHED/M", "cached_input_per_million"),
    Column("OUTPUT/M", "output_per_million"),
    Column("FEE", "request_fee"),
)


def _price(text: str | None, option: str) -> Decimal | None:
    if text is None:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise UsageError(f"{option} {text!r}: a decimal number, e.g. 0.15") from None
    if not value.is_finite() or value < 0:
        raise UsageError(f"{option} {text!r}: a price is a number of at least 0")
    return value


def _row(entry: PriceEntry, source: str) -> dict[str, Any]:
    return {**price_summary(entry), "source": source}


async def add(session: Session, args: argparse.Namespace) -> int:
    writer = session.write_access()
    actions = PriceActions(session.store, writer.bus, session.config.metering.prices)
    version = await actions.add_price(
        session.actor,
        model=args.model,
        deployment=args.deployment,
        effective_from=parse_time(args.effective_from, "--effective-from"),
        currency=args.currency,
        input_per_million=_price(args.input, "--input") or Decimal(0),
        output_per_million=_price(args.output, "--output") or Decimal(0),
        cached_input_per_million=_price(args.cached_input, "--cached-input"),
        request_fee=_price(args.request_fee, "--request-fee") or Decimal(0),
    )
    session.out.record(_row(version.entry, "admin"), COLUMNS)
    return 0


async def list_prices(session: Session, args: argparse.Namespace) -> int:
    config = sorted(
        (e for e in session.config.metering.prices if args.model in (None, e.model)),
        key=lambda e: (e.model, e.deployment or "", e.effective_from),
    )
    rows = [_row(e, "config") for e in config]
    after = None
    while True:  # admin versions, oldest first, a page at a time
        page = await session.store.usage.prices.list(model=args.model, after=after)
        rows += [_row(v.entry, "admin") for v in page]
        if not page:
            break
        after = page[-1].entry.id
    session.out.records(rows, COLUMNS)
    return 0
