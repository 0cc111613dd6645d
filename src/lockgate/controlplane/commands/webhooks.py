"""``lockgate webhooks create|list|delete|deliveries|replay``.

``create`` prints the signing secret once (it is stored encrypted: the command
needs ``LOCKGATE_MASTER_KEYS``, like the gateway that will sign with it).
"""

from __future__ import annotations

import argparse
from typing import Any

from lockgate.controlplane.actions import AdminActions
from lockgate.controlplane.actions.webhooks import subscription_summary
from lockgate.controlplane.commands.inputs import every, resolve_organization
from lockgate.controlplane.commands.output import Column
from lockgate.controlplane.commands.session import Session
from lockgate.store.repositories.base import MAX_PAGE_SIZE
from lockgate.webhooks.model import Delivery, DeliveryStatus, EventType

COLUMNS = (
    Column("ID", "id"),
    Column("URL", "url"),
    Column("EVENTS", "event_types"),
    Column("ENABLED", "is_enabled"),
    Column("CREATED", "created_at"),
)
DELIVERY_COLUMNS = (
    Column("ID", "id"),
    Column("EVENT", "event_id"),
    Column("STATUS", "status"),
    Column("ATTEMPTS", "attempts"),
    Column("LAST STATUS", "last_status_code"),
    Column("LAST ERROR", "last_error"),
    Column("REPLAY OF", "replay_of"),
)


def _actions(session: Session) -> AdminActions:
    """The session's actions, with the master keyring (secrets are sealed with it)."""
    from lockgate.startup import load_keyring

    writer = session.write_access()
    return AdminActions(session.store, writer.bus, writer.pepper, load_keyring())


def _delivery(delivery: Delivery) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "subscription_id": delivery.subscription_id,
        "event_id": delivery.event_id,
        "status": delivery.status.value,
        "attempts": delivery.attempts,
        "last_status_code": delivery.last_status_code,
        "last_error": delivery.last_error,
        "replay_of": delivery.replay_of,
        "created_at": delivery.created_at.isoformat(),
    }


async def create(session: Session, args: argparse.Namespace) -> int:
    org = await resolve_organization(session.store, args.org)
    subscription, secret = await _actions(session).create_subscription(
        session.actor,
        org.id,
        url=args.url,
        event_types=[EventType(e) for e in args.event],
        description=args.description,
    )
    session.out.secret("Signing secret (shown once; verify Lockgate-Signature with it):", secret)
    session.out.record({**subscription_summary(subscription), "secret": secret}, COLUMNS)
    return 0


async def list_webhooks(session: Session, args: argparse.Namespace) -> int:
    store = session.store
    org = await resolve_organization(store, args.org)
    found = await every(
        lambda after: store.webhooks.list_subscriptions(
            organization_id=org.id, limit=MAX_PAGE_SIZE, after=after
        )
    )
    session.out.records([subscription_summary(s) for s in found], COLUMNS)
    return 0


async def delete(session: Session, args: argparse.Namespace) -> int:
    org = await resolve_organization(session.store, args.org)
    deleted = await session.actions.delete_subscription(session.actor, org.id, args.webhook_id)
    session.out.record(subscription_summary(deleted), COLUMNS)
    return 0


async def deliveries(session: Session, args: argparse.Namespace) -> int:
    store = session.store
    org = await resolve_organization(store, args.org)
    await store.webhooks.get_subscription(args.webhook_id, organization_id=org.id)
    status = DeliveryStatus(args.status) if args.status else None
    found = await every(
        lambda after: store.webhooks.list_deliveries(
            organization_id=org.id,
            subscription_id=args.webhook_id,
            status=status,
            limit=MAX_PAGE_SIZE,
            after=after,
        )
    )
    session.out.records([_delivery(d) for d in found], DELIVERY_COLUMNS)
    return 0


async def replay(session: Session, args: argparse.Namespace) -> int:
    org = await resolve_organization(session.store, args.org)
    delivery = await session.actions.replay_delivery(session.actor, org.id, args.delivery_id)
    session.out.record(_delivery(delivery), DELIVERY_COLUMNS)
    return 0
