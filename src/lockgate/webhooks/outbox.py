"""The outbox: an event and its deliveries are written in the transaction that decided it.

Whoever decides that something happened (the budget evaluator recording a
threshold crossing, the summariser closing an hour) calls ``enqueue`` with
its own open transaction. The event row, one delivery row per subscriber, and
the deciding write commit together or not at all: a crash can neither lose
an event that was decided nor send one that was not. The deliverer picks up
deliveries later, from any process.

Events are idempotent by ``dedupe_key``: enqueueing the same key twice (two
evaluators racing, a retry after an unclear commit) adds nothing the second
time.

Body sent for an event (``event_body``)::

    {"id": "evt_…", "type": "budget.threshold_crossed", "created": "2026-…Z",
     "organization_id": "org_…", "data": {…}}
"""

from __future__ import annotations

from typing import Any

import orjson

from lockgate.store.store import Transaction
from lockgate.webhooks.model import Event, EventType


async def enqueue(
    tx: Transaction,
    *,
    organization_id: str,
    event_type: EventType,
    dedupe_key: str,
    data: dict[str, Any],
    event_id: str | None = None,
) -> Event | None:
    """Write the event and a delivery for each enabled subscriber, in ``tx``.

    Returns the event, or None when ``dedupe_key`` was enqueued before (nothing written).
    """
    event = await tx.webhooks.add_event(
        organization_id=organization_id,
        event_type=event_type,
        dedupe_key=dedupe_key,
        payload=data,
        event_id=event_id,
    )
    if event is None:
        return None
    for subscription in await tx.webhooks.subscribers(
        organization_id=organization_id, event_type=event_type
    ):
        await tx.webhooks.add_delivery(event, subscription.id)
    return event


def event_body(event: Event) -> bytes:
    """The exact bytes POSTed (and signed) for ``event``: the same on every attempt."""
    return orjson.dumps(
        {
            "id": event.id,
            "type": event.type.value,
            "created": event.created_at.isoformat().replace("+00:00", "Z"),
            "organization_id": event.organization_id,
            "data": event.payload,
        }
    )
