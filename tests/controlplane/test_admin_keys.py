"""Updating API keys, and idempotent creation and rotation (Idempotency-Key)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from lockgate.errors import AuthenticationFailed
from lockgate.tenancy.model import Role
from tests.controlplane.conftest import Admin
from tests.controlplane.tenants import assert_error, audit_entries, two_tenants


async def test_key_update_applies_at_once_and_is_audited(admin: Admin) -> None:
    t = await two_tenants(admin)
    authenticator = admin.services.authenticator
    async with admin.client(t.a_admin) as client:
        await client.patch(f"{t.base_a}/projects/{t.pa}", json={"allowed_models": ["m1", "m2"]})
        made = await client.post(
            f"{t.base_a}/projects/{t.pa}/api_keys",
            json={"name": "ci", "expires_at": "2099-01-01T00:00:00Z"},
        )
        key_id, secret = made.json()["id"], made.json()["key"].split("_")[2]
        await authenticator.check_api_key(key_id, secret)  # cached now
        url = f"{t.base_a}/api_keys/{key_id}"
        changes: dict[str, Any] = {
            "name": "ci-2",
            "allowed_models": ["m1"],
            "allowed_cidrs": ["10.1.2.3/8"],
            "required_model_tags": {"classification": "unclassified"},
            "limits": {"requests_per_minute": 30, "burst": 5},
            "metadata": {"team": "data"},
            "expires_at": None,  # removes the expiry
        }
        patched = await client.patch(url, json=changes)
        assert patched.status_code == 200, patched.text
        body = patched.json()
        assert body["name"] == "ci-2"
        assert body["allowed_cidrs"] == ["10.0.0.0/8"]  # canonical
        assert body["required_model_tags"] == {"classification": "unclassified"}
        assert body["limits"]["requests_per_minute"] == 30
        assert body["metadata"] == {"team": "data"}
        assert body["expires_at"] is None
        assert body["scopes"] == ["inference"]  # left out: unchanged
        assert "key" not in body
        assert_error(await client.patch(url, json={"allowed_models": ["m3"]}), 422,
                     "outside_allowed_models")  # fmt: skip
        assert_error(await client.patch(url, json={"allowed_cidrs": ["10.0.0.300/8"]}), 400,
                     "invalid_parameter")  # fmt: skip
        assert_error(await client.patch(url, json={"secret": "x"}), 400, "invalid_parameter")
        assert_error(await client.patch(url, json={"scopes": ["root"]}), 400, "invalid_parameter")
        missing = f"{t.base_a}/api_keys/aaaaaaaaaaaaaaaa"
        assert_error(await client.patch(missing, json={"name": "x"}), 404, "not_found")
    grant = await authenticator.check_api_key(key_id, secret)  # reloaded after the update
    assert grant.key.allowed_models == ("m1",)
    assert grant.key.limits.requests_per_minute == 30
    assert grant.key.expires_at is None
    [entry] = await audit_entries(admin, t.a, "api_key.update")
    assert entry["before"]["name"] == "ci"
    assert entry["after"]["name"] == "ci-2"
    assert "secret_hash" not in entry["after"]


async def test_only_key_managers_update_keys(admin: Admin) -> None:
    t = await two_tenants(admin)
    member = await admin.service_key(t.a, t.pa, Role.MEMBER, role_project=t.pa)
    async with admin.client(t.a_admin) as client:
        made = await client.post(f"{t.base_a}/projects/{t.pa}/api_keys", json={"name": "k"})
    async with admin.client(member) as client:
        url = f"{t.base_a}/api_keys/{made.json()['id']}"
        assert_error(await client.patch(url, json={"name": "x"}), 403, "permission_denied")


async def test_idempotent_create_returns_the_same_key_once_made(sealed_admin: Admin) -> None:
    admin = sealed_admin
    t = await two_tenants(admin)
    keys = f"{t.base_a}/projects/{t.pa}/api_keys"
    async with admin.client(t.a_admin) as client:
        headers = {"idempotency-key": "4d2c0d36-create"}
        first = await client.post(keys, json={"name": "ci"}, headers=headers)
        assert first.status_code == 201
        assert "idempotent-replayed" not in first.headers
        # The same request again (equal JSON, other spelling): the same answer, no new key.
        retry = await client.post(keys, json={"scopes": ["inference"], "name": "ci"},
                                  headers=headers)  # fmt: skip
        assert retry.status_code == 201
        assert retry.headers["idempotent-replayed"] == "true"
        assert retry.json() == first.json()
        listed = (await client.get(keys)).json()["data"]
        assert [k["id"] for k in listed if k["name"] == "ci"] == [first.json()["id"]]
        reused = await client.post(keys, json={"name": "other"}, headers=headers)
        assert_error(reused, 422, "idempotency_key_reused")
        elsewhere = await client.post(
            f"{t.base_a}/api_keys/{first.json()['id']}/rotate", json={}, headers=headers
        )
        assert_error(elsewhere, 422, "idempotency_key_reused")  # another endpoint
        bad = await client.post(keys, json={"name": "ci"}, headers={"idempotency-key": "a b"})
        assert_error(bad, 400, "invalid_parameter")
        other_key = await client.post(keys, json={"name": "ci"},
                                      headers={"idempotency-key": "another"})  # fmt: skip
        assert other_key.json()["id"] != first.json()["id"]
    # Keys are per caller: another principal's same key is a new request.
    other_admin = await admin.service_key(t.a, t.pa, Role.ORG_ADMIN, account_name="second")
    async with admin.client(other_admin) as client:
        theirs = await client.post(keys, json={"name": "ci"}, headers=headers)
        assert theirs.status_code == 201
        assert theirs.json()["id"] != first.json()["id"]
    created = await audit_entries(admin, t.a, "api_key.create")
    assert len([e for e in created if e["after"]["name"] == "ci"]) == 3  # not the replay


async def test_idempotent_rotation_rotates_once(sealed_admin: Admin) -> None:
    admin = sealed_admin
    t = await two_tenants(admin)
    authenticator = admin.services.authenticator
    async with admin.client(t.a_admin) as client:
        made = (
            await client.post(f"{t.base_a}/projects/{t.pa}/api_keys", json={"name": "k"})
        ).json()
        rotate = f"{t.base_a}/api_keys/{made['id']}/rotate"
        headers = {"idempotency-key": "rotate-1"}
        # Concurrent retries (a client that timed out and retried at once): one rotation.
        answers = await asyncio.gather(
            *(client.post(rotate, json={"grace_s": 60}, headers=headers) for _ in range(3))
        )
        assert [a.status_code for a in answers] == [200, 200, 200], [a.text for a in answers]
        assert len({a.json()["key"] for a in answers}) == 1
        assert sum(a.headers.get("idempotent-replayed") == "true" for a in answers) == 2
        changed = await client.post(rotate, json={"grace_s": 10}, headers=headers)
        assert_error(changed, 422, "idempotency_key_reused")
    assert len(await audit_entries(admin, t.a, "api_key.rotate")) == 1
    # The original secret is still in its grace period: a second rotation would have
    # moved the first new secret there and cut the original off.
    new_secret = answers[0].json()["key"].split("_")[2]
    await authenticator.check_api_key(made["id"], made["key"].split("_")[2])
    await authenticator.check_api_key(made["id"], new_secret)


async def test_without_a_master_key_retries_do_not_act_twice_but_cannot_replay(
    admin: Admin,
) -> None:
    t = await two_tenants(admin)
    authenticator = admin.services.authenticator
    async with admin.client(t.a_admin) as client:
        made = (
            await client.post(f"{t.base_a}/projects/{t.pa}/api_keys", json={"name": "k"})
        ).json()
        rotate = f"{t.base_a}/api_keys/{made['id']}/rotate"
        headers = {"idempotency-key": "rotate-no-master-key"}
        first = await client.post(rotate, json={}, headers=headers)
        assert first.status_code == 200
        retry = await client.post(rotate, json={}, headers=headers)
        error = assert_error(retry, 409, "idempotency_replay_unavailable")
        assert "LOCKGATE_MASTER_KEYS" in error["message"]
        assert_error(await client.post(rotate, json={"grace_s": 1}, headers=headers), 422,
                     "idempotency_key_reused")  # fmt: skip
    assert len(await audit_entries(admin, t.a, "api_key.rotate")) == 1
    await authenticator.check_api_key(made["id"], first.json()["key"].split("_")[2])
    with pytest.raises(AuthenticationFailed):  # the stored response was never kept
        await authenticator.check_api_key(made["id"], "x" * 52)
    records = await admin.services.store.idempotency.get(
        f"api_key:{t.a_admin.split('_')[1]}", "rotate-no-master-key"
    )
    assert records is not None
    assert records.response is None


async def test_stored_responses_are_encrypted(sealed_admin: Admin) -> None:
    admin = sealed_admin
    t = await two_tenants(admin)
    async with admin.client(t.a_admin) as client:
        made = await client.post(f"{t.base_a}/projects/{t.pa}/api_keys", json={"name": "k"},
                                 headers={"idempotency-key": "sealed"})  # fmt: skip
    record = await admin.services.store.idempotency.get(
        f"api_key:{t.a_admin.split('_')[1]}", "sealed"
    )
    assert record is not None
    assert record.response is not None
    secret = made.json()["key"].encode()
    assert secret not in record.response
    assert secret.split(b"_")[2] not in record.response
