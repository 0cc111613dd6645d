"""Webhooks through the admin API: secret shown once, delivery log, replay, rotation,
tenant isolation (SQLite and PostgreSQL)."""

from __future__ import annotations

from lockgate.controlplane.actions import SYSTEM
from lockgate.startup import load_keyring
from lockgate.webhooks.deliverer import Deliverer
from lockgate.webhooks.model import EventType
from lockgate.webhooks.outbox import enqueue
from lockgate.webhooks.spec import WebhooksSpec
from tests.controlplane.conftest import Admin
from tests.controlplane.conftest import admin as admin  # the fixtures, here too
from tests.controlplane.conftest import database_url as database_url
from tests.controlplane.conftest import sealed_admin as sealed_admin
from tests.controlplane.tenants import assert_error, audit_entries, two_tenants
from tests.webhooks.receiver import Receiver

FAST = WebhooksSpec(backoff_initial_s=0.01, backoff_max_s=0.02, max_attempts=2)


async def test_a_subscription_shows_its_secret_once_and_logs_every_attempt(
    sealed_admin: Admin,
) -> None:
    admin = sealed_admin
    t = await two_tenants(admin)
    store = admin.services.store
    async with Receiver(fail_first=1) as receiver, admin.client(t.a_admin) as client:
        created = await client.post(
            f"{t.base_a}/webhooks",
            json={"url": receiver.url, "event_types": ["budget.threshold_crossed"]},
        )
        assert created.status_code == 201, created.text
        hook = created.json()
        receiver.secret = hook["secret"]
        assert hook["secret"].startswith("whsec_")
        listed = await client.get(f"{t.base_a}/webhooks")
        assert [h["id"] for h in listed.json()["data"]] == [hook["id"]]
        assert hook["secret"] not in listed.text
        got = await client.get(f"{t.base_a}/webhooks/{hook['id']}")
        assert "secret" not in got.json()
        stored = await store.webhooks.get_subscription(hook["id"], organization_id=t.a)
        assert hook["secret"].encode() not in stored.secret  # sealed at rest
        async with store.transaction() as tx:
            await enqueue(
                tx,
                organization_id=t.a,
                event_type=EventType.BUDGET_THRESHOLD_CROSSED,
                dedupe_key="k",
                data={"x": 1},
            )
        deliverer = Deliverer(store, load_keyring(), FAST, jitter=lambda: 0.0)
        await deliverer.run_once()  # 500
        (delivery,) = (await client.get(f"{t.base_a}/webhooks/{hook['id']}/deliveries")).json()[
            "data"
        ]
        assert delivery["status"] == "pending"
        assert delivery["last_status_code"] == 500
        await store.webhooks.reschedule(delivery["id"], at=stored.created_at)  # due now
        await deliverer.run_once()  # 200
        detail = (await client.get(f"{t.base_a}/webhook_deliveries/{delivery['id']}")).json()
        assert detail["status"] == "delivered"
        assert detail["event_type"] == "budget.threshold_crossed"
        assert detail["event"]["data"] == {"x": 1}
        assert [(a["attempt"], a["status_code"]) for a in detail["attempt_log"]] == [
            (1, 500),
            (2, 200),
        ]
        replayed = await client.post(f"{t.base_a}/webhook_deliveries/{delivery['id']}/replay")
        assert replayed.status_code == 201, replayed.text
        assert replayed.json()["replay_of"] == delivery["id"]
        await deliverer.run_once()
        assert [r.status for r in receiver.received] == [500, 200, 200]
        assert all(r.is_verified for r in receiver.received)
        # Rotation: the new secret is shown once; both sign during the grace period.
        rotated = await client.post(
            f"{t.base_a}/webhooks/{hook['id']}/rotate_secret", json={"grace_s": 3600}
        )
        assert rotated.status_code == 200, rotated.text
        new_secret = rotated.json()["secret"]
        assert new_secret != hook["secret"]
        await client.post(f"{t.base_a}/webhook_deliveries/{delivery['id']}/replay")
        await deliverer.run_once()
        last = receiver.received[-1]
        assert last.is_verified, "still verifies with the old secret"
        receiver.secret = new_secret
        await client.post(f"{t.base_a}/webhook_deliveries/{delivery['id']}/replay")
        await deliverer.run_once()
        assert receiver.received[-1].is_verified, "and with the new one"
        assert receiver.received[-1].headers["lockgate-signature"].count("v1=") == 2
    replays = await audit_entries(admin, t.a, "webhook.replay")
    assert len(replays) == 3
    assert replays[-1]["after"]["replay_of"] == delivery["id"]
    creations = await audit_entries(admin, t.a, "webhook.create")
    assert hook["secret"] not in str(creations)
    assert new_secret not in str(await audit_entries(admin, t.a, "webhook.rotate_secret"))


async def test_webhook_endpoints_are_invisible_across_organisations(sealed_admin: Admin) -> None:
    admin = sealed_admin
    t = await two_tenants(admin)
    actions = admin.services.actions
    b_hook, _ = await actions.create_subscription(
        SYSTEM, t.b, url="https://b.example/hook", event_types=[EventType.USAGE_SUMMARY_DAILY]
    )
    async with admin.services.store.transaction() as tx:
        await enqueue(
            tx,
            organization_id=t.b,
            event_type=EventType.USAGE_SUMMARY_DAILY,
            dedupe_key="b-summary",
            data={},
        )
    (b_delivery,) = await admin.services.store.webhooks.list_deliveries(organization_id=t.b)
    async with admin.client(t.a_admin) as client:
        for method, path in (
            ("GET", f"{t.base_b}/webhooks"),
            ("GET", f"{t.base_a}/webhooks/{b_hook.id}"),
            ("PATCH", f"{t.base_a}/webhooks/{b_hook.id}"),
            ("DELETE", f"{t.base_a}/webhooks/{b_hook.id}"),
            ("POST", f"{t.base_a}/webhooks/{b_hook.id}/rotate_secret"),
            ("GET", f"{t.base_a}/webhooks/{b_hook.id}/deliveries"),
            ("GET", f"{t.base_a}/webhook_deliveries/{b_delivery.id}"),
            ("POST", f"{t.base_a}/webhook_deliveries/{b_delivery.id}/replay"),
            ("POST", f"{t.base_b}/webhook_deliveries/{b_delivery.id}/replay"),
        ):
            answer = await client.request(
                method, path, json={"is_enabled": False} if method == "PATCH" else None
            )
            assert_error(answer, 404, "not_found")
        for bad in (
            {"url": "file:///etc/passwd", "event_types": ["budget.threshold_crossed"]},
            {"url": "gopher://x/", "event_types": ["budget.threshold_crossed"]},
            {"url": "https://a.example/", "event_types": []},
            {"url": "https://a.example/", "event_types": ["key.stolen"]},
            {"url": "https://a.example/", "event_types": ["usage.summary.daily"], "x": 1},
        ):
            assert_error(
                await client.post(f"{t.base_a}/webhooks", json=bad), 400, "invalid_parameter"
            )
    assert (
        await admin.services.store.webhooks.get_subscription(b_hook.id, organization_id=t.b)
    ).is_enabled


async def test_without_a_master_key_there_are_no_webhooks(admin: Admin) -> None:
    t = await two_tenants(admin)
    async with admin.client(t.a_admin) as client:
        answer = await client.post(
            f"{t.base_a}/webhooks",
            json={"url": "https://a.example/hook", "event_types": ["usage.summary.hourly"]},
        )
        assert_error(answer, 409, "master_key_not_configured")
