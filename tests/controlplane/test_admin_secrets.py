"""Upstream secrets: write-only, encrypted at rest, never returned, logged or audited."""

from __future__ import annotations

import logging

import pytest

from lockgate.controlplane.actions.secrets import upstream_secret_aad
from lockgate.startup import load_keyring
from lockgate.tenancy.model import Role
from tests.controlplane.conftest import Admin
from tests.controlplane.tenants import assert_error, audit_entries, two_tenants

VALUE = "sk-live-7Qm2x9Vb4Lk8Pz1Rt6Ws3Yn5"


async def test_secrets_are_stored_encrypted_and_never_shown(
    sealed_admin: Admin, caplog: pytest.LogCaptureFixture
) -> None:
    admin = sealed_admin
    t = await two_tenants(admin)
    secrets = f"{t.base_a}/upstream_secrets"
    caplog.set_level(logging.DEBUG)
    async with admin.client(t.a_admin) as client:
        put = await client.put(f"{secrets}/openai-prod", json={"value": VALUE})
        assert put.status_code == 200, put.text
        assert put.json()["name"] == "openai-prod"
        assert put.json()["key_version"] == 1
        replaced = await client.put(f"{secrets}/openai-prod", json={"value": VALUE + "2"})
        assert replaced.json()["id"] == put.json()["id"]
        assert replaced.json()["created_at"] == put.json()["created_at"]
        await client.put(f"{secrets}/anthropic", json={"value": "sk-ant"})
        listed = await client.get(secrets)
        assert [s["name"] for s in listed.json()["data"]] == ["anthropic", "openai-prod"]
        paged = await client.get(secrets, params={"limit": 1, "after": "anthropic"})
        assert [s["name"] for s in paged.json()["data"]] == ["openai-prod"]
        for response in (put, replaced, listed):
            assert VALUE not in response.text
            assert "ciphertext" not in response.text
        for name, body in (
            ("bad name!", {"value": "x"}),
            ("openai", {"value": ""}),
            ("openai", {"value": VALUE, "note": "x"}),
            ("openai", {}),
        ):
            error = assert_error(
                await client.put(f"{secrets}/{name}", json=body), 400, "invalid_parameter"
            )
            assert VALUE not in str(error)
        deleted = await client.delete(f"{secrets}/anthropic")
        assert deleted.status_code == 200
        assert_error(await client.delete(f"{secrets}/anthropic"), 404, "not_found")
    stored = await admin.services.store.upstream_secrets.get("openai-prod", organization_id=t.a)
    assert VALUE.encode() not in stored.ciphertext
    keyring = load_keyring()
    assert keyring is not None
    aad = upstream_secret_aad(t.a, "openai-prod")
    assert keyring.decrypt(stored.ciphertext, aad) == (VALUE + "2").encode()
    entries = await audit_entries(admin, t.a, "upstream_secret.put")
    assert [e["after"] for e in entries] == [
        {"name": "anthropic", "key_version": 1},
        {"name": "openai-prod", "key_version": 1},
        {"name": "openai-prod", "key_version": 1},
    ]
    [removal] = await audit_entries(admin, t.a, "upstream_secret.delete")
    assert removal["before"] == {"name": "anthropic", "key_version": 1}
    assert VALUE not in caplog.text


async def test_without_a_master_key_secrets_cannot_be_stored(admin: Admin) -> None:
    t = await two_tenants(admin)
    secrets = f"{t.base_a}/upstream_secrets"
    async with admin.client(t.a_admin) as client:
        refused = await client.put(f"{secrets}/openai", json={"value": VALUE})
        error = assert_error(refused, 409, "master_key_not_configured")
        assert "LOCKGATE_MASTER_KEYS" in error["message"]
        assert (await client.get(secrets)).json()["data"] == []  # listing needs no key


@pytest.mark.parametrize(
    ("role", "status"),
    [(Role.ORG_OWNER, 200), (Role.PROJECT_ADMIN, 403), (Role.MEMBER, 403), (Role.AUDITOR, 403)],
)
async def test_only_secret_managers_touch_secrets(
    sealed_admin: Admin, role: Role, status: int
) -> None:
    t = await two_tenants(sealed_admin)
    scoped = t.pa if role in (Role.PROJECT_ADMIN, Role.MEMBER) else None
    key = await sealed_admin.service_key(t.a, t.pa, role, role_project=scoped, account_name="c")
    async with sealed_admin.client(key) as client:
        put = await client.put(f"{t.base_a}/upstream_secrets/openai", json={"value": VALUE})
        assert put.status_code == status
        assert (await client.get(f"{t.base_a}/upstream_secrets")).status_code == status
