"""Webhook subscriptions: create (secret shown once), update, delete, rotate the secret,
replay a delivery. Each is audited; no audit entry, log line or listing ever holds a
secret.

A secret is sealed with the master keyring, bound to its organisation and
subscription, before it is stored: without ``LOCKGATE_MASTER_KEYS`` there are
no webhooks (409 ``master_key_not_configured``), as for upstream secrets.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from lockgate.controlplane.actions.base import ActionsBase, Actor, audit, changes
from lockgate.controlplane.actions.errors import MasterKeyNotConfigured
from lockgate.store.columns import utc_now
from lockgate.store.repositories.base import UNSET
from lockgate.store.repositories.webhooks import new_subscription_id
from lockgate.webhooks.model import Delivery, EventType, Subscription, check_url
from lockgate.webhooks.sealing import seal
from lockgate.webhooks.signing import new_secret


def subscription_summary(subscription: Subscription) -> dict[str, Any]:
    """What the audit log and the admin API show of a subscription: never a secret."""
    expires = subscription.previous_expires_at
    return {
        "id": subscription.id,
        "organization_id": subscription.organization_id,
        "url": subscription.url,
        "event_types": [t.value for t in subscription.event_types],
        "description": subscription.description,
        "is_enabled": subscription.is_enabled,
        "previous_secret_expires_at": expires.isoformat() if expires else None,
        "created_at": subscription.created_at.isoformat(),
    }


class WebhookActions(ActionsBase):
    def _require_keyring(self) -> None:
        if self._keyring is None:
            raise MasterKeyNotConfigured(
                "Webhook signing secrets are stored encrypted, and no master key is "
                "configured: set LOCKGATE_MASTER_KEYS (see docs/configuration.md) and restart."
            )

    async def create_subscription(
        self,
        actor: Actor,
        organization_id: str,
        *,
        url: str,
        event_types: Sequence[EventType],
        description: str = "",
    ) -> tuple[Subscription, str]:
        """The subscription and its signing secret (shown this once, never again).
        Raises ``InvalidWebhookUrl`` (a ``ValueError``) for a URL Lockgate will not call."""
        self._require_keyring()
        assert self._keyring is not None
        check_url(url)
        subscription_id = new_subscription_id()
        secret = new_secret()
        sealed = seal(self._keyring, organization_id, subscription_id, secret)
        async with self._store.transaction() as tx:
            subscription = await tx.webhooks.create_subscription(
                subscription_id=subscription_id,
                organization_id=organization_id,
                url=url,
                event_types=tuple(dict.fromkeys(event_types)),
                description=description,
                secret=sealed,
            )
            await audit(
                tx,
                actor,
                "webhook.create",
                "webhook_subscription",
                subscription.id,
                organization_id,
                after=subscription_summary(subscription),
            )
        return subscription, secret

    async def update_subscription(
        self,
        actor: Actor,
        organization_id: str,
        subscription_id: str,
        *,
        url: str | None = None,
        event_types: Sequence[EventType] | None = None,
        description: str | None = None,
        is_enabled: bool | None = None,
    ) -> Subscription:
        """Arguments left None stay as they are. Disabling holds pending deliveries
        (they are sent once enabled again)."""
        if url is not None:
            check_url(url)
        async with self._store.transaction() as tx:
            before = await tx.webhooks.get_subscription(
                subscription_id, organization_id=organization_id
            )
            after = await tx.webhooks.update_subscription(
                subscription_id,
                organization_id=organization_id,
                url=UNSET if url is None else url,
                event_types=UNSET if event_types is None else tuple(dict.fromkeys(event_types)),
                description=UNSET if description is None else description,
                is_enabled=UNSET if is_enabled is None else is_enabled,
            )
            old, new = changes(subscription_summary(before), subscription_summary(after))
            await audit(
                tx,
                actor,
                "webhook.update",
                "webhook_subscription",
                subscription_id,
                organization_id,
                before=old,
                after=new,
            )
        return after

    async def delete_subscription(
        self, actor: Actor, organization_id: str, subscription_id: str
    ) -> Subscription:
        """Its pending deliveries and delivery log go with it."""
        async with self._store.transaction() as tx:
            subscription = await tx.webhooks.get_subscription(
                subscription_id, organization_id=organization_id
            )
            await tx.webhooks.delete_subscription(subscription_id, organization_id=organization_id)
            await audit(
                tx,
                actor,
                "webhook.delete",
                "webhook_subscription",
                subscription_id,
                organization_id,
                before=subscription_summary(subscription),
            )
        return subscription

    async def rotate_webhook_secret(
        self,
        actor: Actor,
        organization_id: str,
        subscription_id: str,
        *,
        grace: timedelta = timedelta(hours=24),
    ) -> tuple[Subscription, str]:
        """A new secret (returned this once). For ``grace`` deliveries are signed with
        both, so the receiver can switch when it likes; a zero grace drops the old one now."""
        self._require_keyring()
        assert self._keyring is not None
        secret = new_secret()
        sealed = seal(self._keyring, organization_id, subscription_id, secret)
        async with self._store.transaction() as tx:
            before = await tx.webhooks.get_subscription(
                subscription_id, organization_id=organization_id
            )
            keep = grace > timedelta(0)
            after = await tx.webhooks.update_subscription(
                subscription_id,
                organization_id=organization_id,
                secret=sealed,
                previous_secret=before.secret if keep else None,
                previous_expires_at=utc_now() + grace if keep else None,
            )
            await audit(
                tx,
                actor,
                "webhook.rotate_secret",
                "webhook_subscription",
                subscription_id,
                organization_id,
                after={"grace_s": grace.total_seconds()},
            )
        return after, secret

    async def replay_delivery(
        self, actor: Actor, organization_id: str, delivery_id: str
    ) -> Delivery:
        """Send a delivery's event to its subscription again, as a new delivery (its own
        attempts and log; ``replay_of`` names the original). Works for any status."""
        async with self._store.transaction() as tx:
            original = await tx.webhooks.get_delivery(delivery_id, organization_id=organization_id)
            event = await tx.webhooks.get_event(original.event_id, organization_id=organization_id)
            replay = await tx.webhooks.add_delivery(
                event, original.subscription_id, replay_of=original.id
            )
            await audit(
                tx,
                actor,
                "webhook.replay",
                "webhook_delivery",
                replay.id,
                organization_id,
                after={
                    "replay_of": original.id,
                    "event_id": event.id,
                    "subscription_id": original.subscription_id,
                },
            )
        return replay
