"""Rows of the webhook tables as the model's objects (``store/repositories/webhooks.py``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Row

from lockgate.webhooks.model import (
    Attempt,
    Delivery,
    DeliveryStatus,
    Event,
    EventType,
    Subscription,
)


def to_subscription(row: Row[Any]) -> Subscription:
    return Subscription(
        id=row.id,
        organization_id=row.organization_id,
        url=row.url,
        event_types=tuple(EventType(t) for t in row.event_types),
        description=row.description,
        is_enabled=bool(row.is_enabled),
        secret=bytes(row.secret),
        previous_secret=None if row.previous_secret is None else bytes(row.previous_secret),
        previous_expires_at=row.previous_expires_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def to_event(row: Row[Any]) -> Event:
    return Event(
        id=row.id,
        organization_id=row.organization_id,
        type=EventType(row.type),
        dedupe_key=row.dedupe_key,
        payload=dict(row.payload),
        created_at=row.created_at,
    )


def to_delivery(row: Row[Any]) -> Delivery:
    return Delivery(
        id=row.id,
        organization_id=row.organization_id,
        subscription_id=row.subscription_id,
        event_id=row.event_id,
        status=DeliveryStatus(row.status),
        attempts=int(row.attempts),
        next_attempt_at=row.next_attempt_at,
        last_status_code=row.last_status_code,
        last_error=row.last_error,
        replay_of=row.replay_of,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def to_attempt(row: Row[Any]) -> Attempt:
    return Attempt(
        delivery_id=row.delivery_id,
        attempt=int(row.attempt),
        started_at=row.started_at,
        status_code=row.status_code,
        latency_ms=float(row.latency_ms),
        error=row.error,
    )
