"""The deliverer: sends due deliveries from the outbox, with retries, back-off and a log.

``run_once`` takes the due pending deliveries (oldest first, ``batch`` at a
time), claims each (a conditional update that also pushes its next attempt
past the attempt's own timeout, so no other deliverer takes it meanwhile),
and sends them, ``concurrency`` at once. Each attempt is logged
(``webhook_attempts``: status code, latency, error) together with the
delivery's new state, in one transaction:

- a 2xx answer: ``delivered``;
- anything else (an error status, a redirect, a timeout, a refused
  connection, a secret that no longer opens) with attempts left: still
  ``pending``, next attempt after ``backoff_s(attempt)``: exponential from
  ``backoff_initial_s``, capped at ``backoff_max_s``, with a random half of it
  taken off (jitter) so receivers coming back are not hit by every retry at once;
- after ``max_attempts``: ``failed`` (the admin API can replay it).

Delivery is at least once: if the process dies between a receiver's 2xx and
the log's commit, the claim runs out and the delivery is sent again.
Receivers drop duplicates by ``Lockgate-Event-Id``.

A disabled subscription's deliveries wait (their next attempt moves on by
``backoff_max_s``, no attempt counted) until it is enabled or deleted.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from lockgate.store.columns import utc_now
from lockgate.store.errors import NotFound, StoreError
from lockgate.store.store import Store
from lockgate.webhooks import standard
from lockgate.webhooks.model import Attempt, Delivery, DeliveryStatus, Subscription
from lockgate.webhooks.outbox import event_body
from lockgate.webhooks.sealing import unseal
from lockgate.webhooks.sender import Sender, SendResult
from lockgate.webhooks.signing import SIGNATURE_HEADER, signature_header
from lockgate.webhooks.spec import WebhooksSpec

if TYPE_CHECKING:
    from lockgate.tenancy.secretbox import Keyring

log = logging.getLogger("lockgate.webhooks")


class Deliverer:
    def __init__(
        self,
        store: Store,
        keyring: Keyring | None,
        config: WebhooksSpec,
        *,
        sender: Sender | None = None,
        jitter: Callable[[], float] = random.random,
        batch: int = 100,
    ) -> None:
        self._store = store
        self._keyring = keyring
        self._config = config
        self._sender = sender or Sender(timeout_s=config.timeout_s)
        self._jitter = jitter
        self._batch = batch
        self._slots = asyncio.Semaphore(config.concurrency)
        self.delivered = 0
        self.retried = 0
        self.failed = 0

    def backoff_s(self, attempt: int) -> float:
        """How long after failed attempt ``attempt`` (1, 2, …) the next one is due."""
        config = self._config
        ceiling = min(config.backoff_max_s, config.backoff_initial_s * 2.0 ** min(attempt - 1, 60))
        return ceiling / 2 + ceiling / 2 * self._jitter()

    async def run_once(self) -> int:
        """Send every delivery due now (one batch); returns how many attempts were made."""
        now = utc_now()
        due = await self._store.webhooks.due(now=now, limit=self._batch)
        if not due:
            return 0
        # Held past the attempt's own bound, with a margin for logging it.
        until = now + timedelta(seconds=self._config.timeout_s * 2 + 5)
        claimed = [d for d in due if await self._store.webhooks.claim(d, now=now, until=until)]
        async with asyncio.TaskGroup() as group:
            for delivery in claimed:
                group.create_task(self._attempt(delivery))
        return len(claimed)

    async def _attempt(self, delivery: Delivery) -> None:
        async with self._slots:
            try:
                await self._deliver(delivery)
            except StoreError as error:  # the claim runs out; it is retried then
                log.warning("webhooks: could not record delivery %s: %s", delivery.id, error)

    async def _deliver(self, delivery: Delivery) -> None:
        webhooks = self._store.webhooks
        try:
            subscription = await webhooks.get_subscription(
                delivery.subscription_id, organization_id=None
            )
        except NotFound:
            return  # deleted meanwhile: its deliveries went with it
        if not subscription.is_enabled:
            await self._postpone(delivery)
            return
        event = await webhooks.get_event(delivery.event_id, organization_id=None)
        body = event_body(event)
        started_at = utc_now()
        attempt_number = delivery.attempts + 1
        try:
            secrets = self._secrets(subscription, started_at)
        except Exception as error:  # a retired master key, a tampered row: log it as an attempt
            result = SendResult(None, 0.0, f"cannot open the signing secret: {error}")
        else:
            signed_at = int(time.time())
            headers = {
                SIGNATURE_HEADER: signature_header(secrets, signed_at, body),
                # The same signatures in the Standard Webhooks form (webhooks/standard.py).
                **standard.headers(secrets, event.id, signed_at, body),
                "Lockgate-Event-Id": event.id,
                "Lockgate-Event-Type": event.type.value,
                "Lockgate-Delivery-Id": delivery.id,
                "Lockgate-Delivery-Attempt": str(attempt_number),
            }
            result = await self._sender.post(subscription.url, body, headers)
        await self._record(delivery, attempt_number, started_at, result)

    def _secrets(self, subscription: Subscription, now: datetime) -> list[str]:
        """The current secret, then the previous one while its grace period lasts."""
        if self._keyring is None:
            raise RuntimeError("no master key is configured (LOCKGATE_MASTER_KEYS)")
        org, sub_id = subscription.organization_id, subscription.id
        found = [unseal(self._keyring, org, sub_id, subscription.secret)]
        expires = subscription.previous_expires_at
        if subscription.previous_secret is not None and expires is not None and expires > now:
            found.append(unseal(self._keyring, org, sub_id, subscription.previous_secret))
        return found

    async def _record(
        self, delivery: Delivery, attempt_number: int, started_at: datetime, result: SendResult
    ) -> None:
        now = utc_now()
        if result.is_delivered:
            status, next_at = DeliveryStatus.DELIVERED, now
            self.delivered += 1
        elif attempt_number >= self._config.max_attempts:
            status, next_at = DeliveryStatus.FAILED, now
            self.failed += 1
            log.warning(
                "webhooks: delivery %s failed after %d attempts (last: %s)",
                delivery.id,
                attempt_number,
                result.error,
            )
        else:
            status = DeliveryStatus.PENDING
            next_at = now + timedelta(seconds=self.backoff_s(attempt_number))
            self.retried += 1
        attempt = Attempt(
            delivery_id=delivery.id,
            attempt=attempt_number,
            started_at=started_at,
            status_code=result.status_code,
            latency_ms=result.latency_ms,
            error=None if result.error is None else result.error[:500],
        )
        async with self._store.transaction() as tx:
            await tx.webhooks.record_attempt(
                delivery, attempt, status=status, next_attempt_at=next_at
            )

    async def _postpone(self, delivery: Delivery) -> None:
        later = utc_now() + timedelta(seconds=self._config.backoff_max_s)
        await self._store.webhooks.reschedule(delivery.id, at=later)
