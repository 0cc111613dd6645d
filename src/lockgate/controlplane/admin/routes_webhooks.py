"""Webhook subscriptions of an organisation, their deliveries and delivery log, replays.

Every endpoint needs ``webhook.manage`` in the organisation (its admins); other
organisations' subscriptions and deliveries are 404. The signing secret is in
the answer of the create and rotate calls only (409 ``master_key_not_configured``
without a master key, since it is stored encrypted).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import orjson
from fastapi import APIRouter, Query

from lockgate.controlplane.admin.deps import Caller, Services
from lockgate.controlplane.admin.schemas import Page
from lockgate.controlplane.admin.schemas_billing import (
    AttemptOut,
    DeliveryOut,
    WebhookCreated,
    WebhookIn,
    WebhookOut,
    WebhookPatch,
    WebhookRotateIn,
)
from lockgate.store.store import Store
from lockgate.tenancy.rbac import Permission
from lockgate.webhooks.model import Delivery, DeliveryStatus, Subscription
from lockgate.webhooks.outbox import event_body

router = APIRouter(prefix="/admin/v1/organizations/{org_id}")
PageSize = Annotated[int, Query(ge=1, le=500)]


def _out(subscription: Subscription) -> WebhookOut:
    return WebhookOut(
        id=subscription.id,
        organization_id=subscription.organization_id,
        url=subscription.url,
        event_types=list(subscription.event_types),
        description=subscription.description,
        is_enabled=subscription.is_enabled,
        previous_secret_expires_at=subscription.previous_expires_at,
        created_at=subscription.created_at,
        updated_at=subscription.updated_at,
    )


def _created(subscription: Subscription, secret: str) -> WebhookCreated:
    return WebhookCreated(**_out(subscription).model_dump(), secret=secret)


def _delivery(delivery: Delivery) -> DeliveryOut:
    pending = delivery.status is DeliveryStatus.PENDING
    return DeliveryOut(
        id=delivery.id,
        subscription_id=delivery.subscription_id,
        event_id=delivery.event_id,
        status=delivery.status.value,
        attempts=delivery.attempts,
        next_attempt_at=delivery.next_attempt_at if pending else None,
        last_status_code=delivery.last_status_code,
        last_error=delivery.last_error,
        replay_of=delivery.replay_of,
        created_at=delivery.created_at,
        updated_at=delivery.updated_at,
    )


async def _delivery_detail(store: Store, delivery: Delivery, org_id: str) -> DeliveryOut:
    out = _delivery(delivery)
    event = await store.webhooks.get_event(delivery.event_id, organization_id=org_id)
    out.event_type = event.type
    out.event = orjson.loads(event_body(event))
    out.attempt_log = [
        AttemptOut(
            attempt=a.attempt,
            started_at=a.started_at,
            status_code=a.status_code,
            latency_ms=a.latency_ms,
            error=a.error,
        )
        for a in await store.webhooks.attempts(delivery.id)
    ]
    return out


@router.post("/webhooks", status_code=201)
async def create_webhook(
    org_id: str, body: WebhookIn, caller: Caller, svc: Services
) -> WebhookCreated:
    """The signing secret is in this answer only: store it where the receiver can read it."""
    caller.require(Permission.WEBHOOK_MANAGE, org_id)
    subscription, secret = await svc.actions.create_subscription(
        caller.actor,
        org_id,
        url=body.url,
        event_types=body.event_types,
        description=body.description,
    )
    return _created(subscription, secret)


@router.get("/webhooks")
async def list_webhooks(
    org_id: str, caller: Caller, svc: Services, limit: PageSize = 100, after: str | None = None
) -> Page[WebhookOut]:
    caller.require(Permission.WEBHOOK_MANAGE, org_id)
    found = await svc.store.webhooks.list_subscriptions(
        organization_id=org_id, limit=limit + 1, after=after
    )
    data = [_out(s) for s in found[:limit]]
    return Page(data=data, has_more=len(found) > limit, last_id=data[-1].id if data else None)


@router.get("/webhooks/{webhook_id}")
async def get_webhook(org_id: str, webhook_id: str, caller: Caller, svc: Services) -> WebhookOut:
    caller.require(Permission.WEBHOOK_MANAGE, org_id)
    return _out(await svc.store.webhooks.get_subscription(webhook_id, organization_id=org_id))


@router.patch("/webhooks/{webhook_id}")
async def update_webhook(
    org_id: str, webhook_id: str, body: WebhookPatch, caller: Caller, svc: Services
) -> WebhookOut:
    caller.require(Permission.WEBHOOK_MANAGE, org_id)
    subscription = await svc.actions.update_subscription(
        caller.actor,
        org_id,
        webhook_id,
        url=body.url,
        event_types=body.event_types,
        description=body.description,
        is_enabled=body.is_enabled,
    )
    return _out(subscription)


@router.delete("/webhooks/{webhook_id}")
async def delete_webhook(org_id: str, webhook_id: str, caller: Caller, svc: Services) -> WebhookOut:
    caller.require(Permission.WEBHOOK_MANAGE, org_id)
    return _out(await svc.actions.delete_subscription(caller.actor, org_id, webhook_id))


@router.post("/webhooks/{webhook_id}/rotate_secret")
async def rotate_webhook_secret(
    org_id: str, webhook_id: str, caller: Caller, svc: Services, body: WebhookRotateIn | None = None
) -> WebhookCreated:
    """A new secret (in this answer only); the old one keeps signing for ``grace_s``."""
    caller.require(Permission.WEBHOOK_MANAGE, org_id)
    grace = timedelta(seconds=(body or WebhookRotateIn()).grace_s)
    subscription, secret = await svc.actions.rotate_webhook_secret(
        caller.actor, org_id, webhook_id, grace=grace
    )
    return _created(subscription, secret)


@router.get("/webhooks/{webhook_id}/deliveries")
async def list_deliveries(
    org_id: str,
    webhook_id: str,
    caller: Caller,
    svc: Services,
    status: DeliveryStatus | None = None,
    limit: PageSize = 100,
    after: str | None = None,
) -> Page[DeliveryOut]:
    """Oldest first (``after``: the last id seen); ``status`` filters."""
    caller.require(Permission.WEBHOOK_MANAGE, org_id)
    await svc.store.webhooks.get_subscription(webhook_id, organization_id=org_id)  # 404
    found = await svc.store.webhooks.list_deliveries(
        organization_id=org_id,
        subscription_id=webhook_id,
        status=status,
        limit=limit + 1,
        after=after,
    )
    data = [_delivery(d) for d in found[:limit]]
    return Page(data=data, has_more=len(found) > limit, last_id=data[-1].id if data else None)


@router.get("/webhook_deliveries/{delivery_id}")
async def get_delivery(org_id: str, delivery_id: str, caller: Caller, svc: Services) -> DeliveryOut:
    """The delivery, the event body it sends, and every attempt (status, latency, error)."""
    caller.require(Permission.WEBHOOK_MANAGE, org_id)
    delivery = await svc.store.webhooks.get_delivery(delivery_id, organization_id=org_id)
    return await _delivery_detail(svc.store, delivery, org_id)


@router.post("/webhook_deliveries/{delivery_id}/replay", status_code=201)
async def replay_delivery(
    org_id: str, delivery_id: str, caller: Caller, svc: Services
) -> DeliveryOut:
    """Send the event again, as a new delivery (audited); the deliverer picks it up."""
    caller.require(Permission.WEBHOOK_MANAGE, org_id)
    return _delivery(await svc.actions.replay_delivery(caller.actor, org_id, delivery_id))
