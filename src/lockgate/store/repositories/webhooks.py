"""Webhook subscriptions, the event outbox, deliveries and their attempt log.

Secrets arrive and leave sealed (ciphertext); sealing is the caller's. Every
read a tenant can reach filters by organisation (``tenant_filter``); the
deliverer's reads (``due``, ``get_event``, ``subscription_for``) are
deployment-wide, since it works for every tenant.

``add_event`` is idempotent by ``dedupe_key`` (``ON CONFLICT DO NOTHING``):
it returns None when the event was already written, and the caller then adds
no deliveries. ``claim`` is a conditional update (still pending, still due):
of two deliverers that see the same due delivery, one wins the row and the
other skips it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update

from lockgate.store.columns import as_utc, new_id, utc_now
from lockgate.store.errors import Conflict, NotFound
from lockgate.store.repositories.base import (
    UNSET,
    Repository,
    Unchanged,
    changed,
    json_object,
    json_value,
    page,
    require,
    tenant_filter,
)
from lockgate.store.repositories.budgets import insert_ignoring_duplicates
from lockgate.store.repositories.webhook_rows import (
    to_attempt,
    to_delivery,
    to_event,
    to_subscription,
)
from lockgate.store.schema_billing import webhook_attempts as _attempts
from lockgate.store.schema_billing import webhook_deliveries as _deliveries
from lockgate.store.schema_billing import webhook_events as _events
from lockgate.store.schema_billing import webhook_subscriptions as _subs
from lockgate.webhooks.model import (
    Attempt,
    Delivery,
    DeliveryStatus,
    Event,
    EventType,
    Subscription,
)


def new_subscription_id() -> str:
    return new_id("whs")


class Webhooks(Repository):
    # -- subscriptions ----------------------------------------------------------------
    async def create_subscription(
        self,
        *,
        subscription_id: str,
        organization_id: str,
        url: str,
        event_types: Sequence[EventType],
        description: str,
        secret: bytes,
    ) -> Subscription:
        """Raises ``NotFound`` for a missing organisation. The caller picks the id
        (``new_subscription_id``): the sealed secret is bound to it."""
        now = utc_now()
        values = {
            "id": subscription_id,
            "organization_id": organization_id,
            "url": url,
            "event_types": json_value([EventType(t).value for t in event_types]),
            "description": description,
            "is_enabled": True,
            "secret": bytes(secret),
            "previous_secret": None,
            "previous_expires_at": None,
            "created_at": now,
            "updated_at": now,
        }
        try:
            async with self._connector.connect(write=True) as conn:
                row = (await conn.execute(insert(_subs).values(values).returning(*_subs.c))).one()
        except Conflict as error:  # the organisation's foreign key
            raise NotFound(f"organization {organization_id!r} not found") from error
        return to_subscription(row)

    async def get_subscription(
        self, subscription_id: str, *, organization_id: str | None
    ) -> Subscription:
        statement = select(_subs).where(
            _subs.c.id == subscription_id, tenant_filter(_subs.c.organization_id, organization_id)
        )
        async with self._connector.connect(write=False) as conn:
            row = (await conn.execute(statement)).first()
        return to_subscription(require(row, "webhook subscription", subscription_id))

    async def list_subscriptions(
        self, *, organization_id: str | None, limit: int = 100, after: str | None = None
    ) -> Sequence[Subscription]:
        statement = select(_subs).where(tenant_filter(_subs.c.organization_id, organization_id))
        statement = page(statement, _subs.c.id, limit=limit, after=after)
        async with self._connector.connect(write=False) as conn:
            return [to_subscription(row) for row in await conn.execute(statement)]

    async def update_subscription(
        self,
        subscription_id: str,
        *,
        organization_id: str,
        url: str | Unchanged = UNSET,
        event_types: Sequence[EventType] | Unchanged = UNSET,
        description: str | Unchanged = UNSET,
        is_enabled: bool | Unchanged = UNSET,
        secret: bytes | Unchanged = UNSET,
        previous_secret: bytes | Unchanged | None = UNSET,
        previous_expires_at: datetime | Unchanged | None = UNSET,
    ) -> Subscription:
        values = changed(
            url=url,
            description=description,
            is_enabled=is_enabled,
            secret=secret,
            previous_secret=previous_secret,
            previous_expires_at=previous_expires_at,
        )
        if event_types is not UNSET:
            values["event_types"] = json_value([EventType(t).value for t in event_types])
        values["updated_at"] = utc_now()
        statement = (
            update(_subs)
            .where(_subs.c.id == subscription_id, _subs.c.organization_id == organization_id)
            .values(values)
            .returning(*_subs.c)
        )
        async with self._connector.connect(write=True) as conn:
            row = (await conn.execute(statement)).first()
        return to_subscription(require(row, "webhook subscription", subscription_id))

    async def delete_subscription(self, subscription_id: str, *, organization_id: str) -> None:
        """Its deliveries and their log go with it (foreign keys cascade); events stay."""
        statement = (
            _subs.delete()
            .where(_subs.c.id == subscription_id, _subs.c.organization_id == organization_id)
            .returning(_subs.c.id)
        )
        async with self._connector.connect(write=True) as conn:
            row = (await conn.execute(statement)).first()
        require(row, "webhook subscription", subscription_id)

    async def subscribers(
        self, *, organization_id: str, event_type: EventType
    ) -> Sequence[Subscription]:
        """The organisation's enabled subscriptions to ``event_type``."""
        statement = select(_subs).where(
            _subs.c.organization_id == organization_id, _subs.c.is_enabled.is_(True)
        )
        async with self._connector.connect(write=False) as conn:
            rows = await conn.execute(statement)
            found = [to_subscription(row) for row in rows]
        return [s for s in found if event_type in s.event_types]

    async def subscribed_organizations(self, event_type: EventType) -> set[str]:
        """Organisations with an enabled subscription to ``event_type`` (deployment-wide)."""
        statement = select(_subs.c.organization_id, _subs.c.event_types).where(
            _subs.c.is_enabled.is_(True)
        )
        async with self._connector.connect(write=False) as conn:
            rows = (await conn.execute(statement)).all()
        return {row.organization_id for row in rows if event_type.value in row.event_types}

    # -- events -------------------------------------------------------------------------
    async def add_event(
        self,
        *,
        organization_id: str,
        event_type: EventType,
        dedupe_key: str,
        payload: dict[str, Any],
        event_id: str | None = None,
    ) -> Event | None:
        """Write the event, or return None if one with ``dedupe_key`` exists already."""
        statement = (
            insert_ignoring_duplicates(self._connector.backend, _events)
            .values(
                id=event_id or new_id("evt"),
                organization_id=organization_id,
                type=EventType(event_type).value,
                dedupe_key=dedupe_key,
                payload=json_object(payload),
                created_at=utc_now(),
            )
            .returning(*_events.c)
        )
        async with self._connector.connect(write=True) as conn:
            row = (await conn.execute(statement)).first()
        return None if row is None else to_event(row)

    async def has_event(self, dedupe_key: str) -> bool:
        statement = select(_events.c.id).where(_events.c.dedupe_key == dedupe_key)
        async with self._connector.connect(write=False) as conn:
            return (await conn.execute(statement)).first() is not None

    async def get_event(self, event_id: str, *, organization_id: str | None) -> Event:
        statement = select(_events).where(
            _events.c.id == event_id, tenant_filter(_events.c.organization_id, organization_id)
        )
        async with self._connector.connect(write=False) as conn:
            row = (await conn.execute(statement)).first()
        return to_event(require(row, "webhook event", event_id))

    # -- deliveries ---------------------------------------------------------------------
    async def add_delivery(
        self, event: Event, subscription_id: str, *, replay_of: str | None = None
    ) -> Delivery:
        now = utc_now()
        values = {
            "id": new_id("whd"),
            "organization_id": event.organization_id,
            "subscription_id": subscription_id,
            "event_id": event.id,
            "status": DeliveryStatus.PENDING.value,
            "attempts": 0,
            "next_attempt_at": now,
            "last_status_code": None,
            "last_error": None,
            "replay_of": replay_of,
            "created_at": now,
            "updated_at": now,
        }
        async with self._connector.connect(write=True) as conn:
            row = (
                await conn.execute(insert(_deliveries).values(values).returning(*_deliveries.c))
            ).one()
        return to_delivery(row)

    async def get_delivery(self, delivery_id: str, *, organization_id: str | None) -> Delivery:
        statement = select(_deliveries).where(
            _deliveries.c.id == delivery_id,
            tenant_filter(_deliveries.c.organization_id, organization_id),
        )
        async with self._connector.connect(write=False) as conn:
            row = (await conn.execute(statement)).first()
        return to_delivery(require(row, "webhook delivery", delivery_id))

    async def list_deliveries(
        self,
        *,
        organization_id: str | None,
        subscription_id: str | None = None,
        status: DeliveryStatus | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> Sequence[Delivery]:
        """Oldest first (ids sort by creation); ``after``: the last id seen."""
        statement = select(_deliveries).where(
            tenant_filter(_deliveries.c.organization_id, organization_id)
        )
        if subscription_id is not None:
            statement = statement.where(_deliveries.c.subscription_id == subscription_id)
        if status is not None:
            statement = statement.where(_deliveries.c.status == DeliveryStatus(status).value)
        statement = page(statement, _deliveries.c.id, limit=limit, after=after)
        async with self._connector.connect(write=False) as conn:
            return [to_delivery(row) for row in await conn.execute(statement)]

    async def due(self, *, now: datetime, limit: int) -> Sequence[Delivery]:
        """Pending deliveries whose next attempt is due, most overdue first."""
        statement = (
            select(_deliveries)
            .where(
                _deliveries.c.status == DeliveryStatus.PENDING.value,
                _deliveries.c.next_attempt_at <= as_utc(now),
            )
            .order_by(_deliveries.c.next_attempt_at, _deliveries.c.id)
            .limit(limit)
        )
        async with self._connector.connect(write=False) as conn:
            return [to_delivery(row) for row in await conn.execute(statement)]

    async def claim(self, delivery: Delivery, *, now: datetime, until: datetime) -> bool:
        """Hold ``delivery`` until ``until`` (no other deliverer sees it due before then);
        False when it is no longer pending and due (someone else took it)."""
        statement = (
            update(_deliveries)
            .where(
                _deliveries.c.id == delivery.id,
                _deliveries.c.status == DeliveryStatus.PENDING.value,
                _deliveries.c.next_attempt_at <= as_utc(now),
            )
            .values(next_attempt_at=as_utc(until))
            .returning(_deliveries.c.id)
        )
        async with self._connector.connect(write=True) as conn:
            return (await conn.execute(statement)).first() is not None

    async def reschedule(self, delivery_id: str, *, at: datetime) -> None:
        """Move a pending delivery's next attempt to ``at`` (no attempt counted)."""
        statement = (
            update(_deliveries)
            .where(
                _deliveries.c.id == delivery_id,
                _deliveries.c.status == DeliveryStatus.PENDING.value,
            )
            .values(next_attempt_at=as_utc(at), updated_at=utc_now())
        )
        async with self._connector.connect(write=True) as conn:
            await conn.execute(statement)

    async def record_attempt(
        self,
        delivery: Delivery,
        attempt: Attempt,
        *,
        status: DeliveryStatus,
        next_attempt_at: datetime,
    ) -> None:
        """Log one attempt and move the delivery on (both in the caller's transaction,
        or in one of their own each)."""
        async with self._connector.connect(write=True) as conn:
            await conn.execute(
                insert(_attempts).values(
                    delivery_id=attempt.delivery_id,
                    attempt=attempt.attempt,
                    started_at=attempt.started_at,
                    status_code=attempt.status_code,
                    latency_ms=attempt.latency_ms,
                    error=attempt.error,
                )
            )
            await conn.execute(
                update(_deliveries)
                .where(_deliveries.c.id == delivery.id)
                .values(
                    status=DeliveryStatus(status).value,
                    attempts=attempt.attempt,
                    next_attempt_at=as_utc(next_attempt_at),
                    last_status_code=attempt.status_code,
                    last_error=attempt.error,
                    updated_at=utc_now(),
                )
            )

    async def attempts(self, delivery_id: str) -> Sequence[Attempt]:
        """The delivery's log, first attempt first (check the delivery's tenant first)."""
        statement = (
            select(_attempts)
            .where(_attempts.c.delivery_id == delivery_id)
            .order_by(_attempts.c.attempt)
        )
        async with self._connector.connect(write=False) as conn:
            return [to_attempt(row) for row in await conn.execute(statement)]
