"""The outbox and the deliverer against real loopback receivers (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import secrets
from datetime import timedelta

import orjson
import pytest

from lockgate.controlplane.actions import SYSTEM, AdminActions
from lockgate.store import Store
from lockgate.tenancy.secretbox import Keyring
from lockgate.webhooks.deliverer import Deliverer
from lockgate.webhooks.model import DeliveryStatus, EventType, InvalidWebhookUrl
from lockgate.webhooks.outbox import enqueue
from lockgate.webhooks.spec import WebhooksSpec
from tests.webhooks.receiver import Receiver

FAST = WebhooksSpec(
    poll_interval_s=0.01, timeout_s=2, max_attempts=4, backoff_initial_s=0.05, backoff_max_s=0.2
)
CROSSED = EventType.BUDGET_THRESHOLD_CROSSED


def unique(name: str) -> str:
    """Organisation names are unique, and the PostgreSQL database is the session's."""
    return f"{name}-{secrets.token_hex(4)}"


async def _event(store: Store, org_id: str, key: str = "k1") -> str:
    async with store.transaction() as tx:
        event = await enqueue(
            tx,
            organization_id=org_id,
            event_type=CROSSED,
            dedupe_key=key,
            data={"threshold_percent": 80, "spent": "8.000000"},
        )
    assert event is not None
    return event.id


async def _drain(deliverer: Deliverer, store: Store, *, until_s: float = 8.0) -> None:
    """Run the deliverer until nothing is pending (what the lease loop does, faster)."""
    async with asyncio.timeout(until_s):
        while await store.webhooks.list_deliveries(
            organization_id=None, status=DeliveryStatus.PENDING, limit=1
        ):
            await deliverer.run_once()
            await asyncio.sleep(0.01)


async def test_a_delivery_is_signed_and_retried_until_the_receiver_accepts(
    store: Store, actions: AdminActions, keyring: Keyring
) -> None:
    org = await actions.create_organization(SYSTEM, unique("acme"))
    async with Receiver(fail_first=2) as receiver:
        subscription, secret = await actions.create_subscription(
            SYSTEM, org.id, url=receiver.url, event_types=[CROSSED]
        )
        receiver.secret = secret
        event_id = await _event(store, org.id)
        deliverer = Deliverer(store, keyring, FAST)
        await _drain(deliverer, store)
    assert [r.status for r in receiver.received] == [500, 500, 200]
    assert all(r.is_verified for r in receiver.received)
    first = receiver.received[0]
    assert first.headers["lockgate-event-id"] == event_id
    assert first.headers["lockgate-event-type"] == "budget.threshold_crossed"
    assert [r.headers["lockgate-delivery-attempt"] for r in receiver.received] == ["1", "2", "3"]
    body = orjson.loads(first.body)
    assert body["id"] == event_id
    assert body["organization_id"] == org.id
    assert body["data"] == {"threshold_percent": 80, "spent": "8.000000"}
    assert all(r.body == first.body for r in receiver.received), "the same bytes every time"
    # Back-off: each retry waited at least half its configured delay (jitter takes off
    # at most half): 0.05 s after the first failure, 0.1 s after the second.
    gaps = [b.at - a.at for a, b in zip(receiver.received, receiver.received[1:], strict=False)]
    assert gaps[0] >= 0.025, gaps
    assert gaps[1] >= 0.05, gaps
    (delivery,) = await store.webhooks.list_deliveries(organization_id=org.id)
    assert delivery.status is DeliveryStatus.DELIVERED
    assert delivery.attempts == 3
    assert delivery.last_status_code == 200
    log = await store.webhooks.attempts(delivery.id)
    assert [(a.attempt, a.status_code, a.error) for a in log] == [
        (1, 500, "HTTP 500"),
        (2, 500, "HTTP 500"),
        (3, 200, None),
    ]
    assert all(a.latency_ms > 0 for a in log)
    assert subscription.id == delivery.subscription_id


async def test_after_max_attempts_the_delivery_fails_and_a_replay_delivers_it(
    store: Store, actions: AdminActions, keyring: Keyring
) -> None:
    org = await actions.create_organization(SYSTEM, unique("acme"))
    async with Receiver(fail_first=FAST.max_attempts) as receiver:
        _, receiver.secret = await actions.create_subscription(
            SYSTEM, org.id, url=receiver.url, event_types=[CROSSED]
        )
        await _event(store, org.id)
        deliverer = Deliverer(store, keyring, FAST)
        await _drain(deliverer, store)
        (failed,) = await store.webhooks.list_deliveries(organization_id=org.id)
        assert failed.status is DeliveryStatus.FAILED
        assert failed.attempts == FAST.max_attempts
        assert deliverer.failed == 1
        replay = await actions.replay_delivery(SYSTEM, org.id, failed.id)
        assert replay.replay_of == failed.id
        assert replay.status is DeliveryStatus.PENDING
        await _drain(deliverer, store)
    assert [r.status for r in receiver.received] == [500] * FAST.max_attempts + [200]
    done = await store.webhooks.get_delivery(replay.id, organization_id=org.id)
    assert done.status is DeliveryStatus.DELIVERED
    assert (await store.webhooks.get_delivery(failed.id, organization_id=org.id)).status is (
        DeliveryStatus.FAILED
    )
    entries = await store.audit.list(organization_id=org.id, action="webhook.replay")
    assert entries[0].after == {
        "replay_of": failed.id,
        "event_id": failed.event_id,
        "subscription_id": failed.subscription_id,
    }


async def test_a_receiver_that_does_not_answer_is_a_timed_out_attempt(
    store: Store, actions: AdminActions, keyring: Keyring
) -> None:
    org = await actions.create_organization(SYSTEM, unique("acme"))
    config = FAST.model_copy(update={"timeout_s": 0.2, "max_attempts": 1})
    async with Receiver(hang=True) as receiver:
        _, receiver.secret = await actions.create_subscription(
            SYSTEM, org.id, url=receiver.url, event_types=[CROSSED]
        )
        await _event(store, org.id)
        await Deliverer(store, keyring, config).run_once()
    (delivery,) = await store.webhooks.list_deliveries(organization_id=org.id)
    assert delivery.status is DeliveryStatus.FAILED
    (attempt,) = await store.webhooks.attempts(delivery.id)
    assert attempt.status_code is None
    assert attempt.error == "timed out after 0.2 s"


async def test_a_refused_connection_is_retried_later(
    store: Store, actions: AdminActions, keyring: Keyring
) -> None:
    org = await actions.create_organization(SYSTEM, unique("acme"))
    async with Receiver() as closed:
        url = closed.url  # nothing listens there once the block ends
    await actions.create_subscription(SYSTEM, org.id, url=url, event_types=[CROSSED])
    await _event(store, org.id)
    deliverer = Deliverer(store, keyring, FAST, jitter=lambda: 1.0)
    assert await deliverer.run_once() == 1
    (delivery,) = await store.webhooks.list_deliveries(organization_id=org.id)
    assert delivery.status is DeliveryStatus.PENDING
    assert delivery.attempts == 1
    assert delivery.last_status_code is None
    assert "cannot connect" in (delivery.last_error or "")
    assert delivery.next_attempt_at > delivery.updated_at - timedelta(seconds=1)
    assert deliverer.backoff_s(1) == pytest.approx(0.05)
    assert deliverer.backoff_s(10) == pytest.approx(0.2), "capped at backoff_max_s"
    assert await deliverer.run_once() == 0, "not due again before its back-off"


async def test_events_are_enqueued_once_per_key_and_only_to_subscribers(
    store: Store, actions: AdminActions
) -> None:
    org = await actions.create_organization(SYSTEM, unique("acme"))
    other = await actions.create_organization(SYSTEM, unique("other"))
    url = "http://127.0.0.1:9/hook"
    crossed_sub, _ = await actions.create_subscription(
        SYSTEM, org.id, url=url, event_types=[CROSSED]
    )
    await actions.create_subscription(
        SYSTEM, org.id, url=url, event_types=[EventType.USAGE_SUMMARY_DAILY]
    )
    await actions.create_subscription(SYSTEM, other.id, url=url, event_types=[CROSSED])
    disabled, _ = await actions.create_subscription(SYSTEM, org.id, url=url, event_types=[CROSSED])
    await actions.update_subscription(SYSTEM, org.id, disabled.id, is_enabled=False)
    await _event(store, org.id, key="same")
    async with store.transaction() as tx:
        again = await enqueue(
            tx, organization_id=org.id, event_type=CROSSED, dedupe_key="same", data={}
        )
    assert again is None
    deliveries = await store.webhooks.list_deliveries(organization_id=None)
    assert [d.subscription_id for d in deliveries] == [crossed_sub.id]


async def test_urls_other_than_http_are_refused(actions: AdminActions) -> None:
    org = await actions.create_organization(SYSTEM, unique("acme"))
    for url in (
        "file:///etc/passwd",
        "gopher://127.0.0.1:6379/_FLUSHALL",
        "ftp://example.com/x",
        "http://user:pw@example.com/hook",
        "http://",
        "https://example.com/a b",
        "https://example.com/#frag",
    ):
        with pytest.raises(InvalidWebhookUrl):
            await actions.create_subscription(SYSTEM, org.id, url=url, event_types=[CROSSED])
