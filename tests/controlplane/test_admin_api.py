"""The admin API: tenant isolation, least privilege, no escalation, audited changes."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import text

from lockgate.controlplane.actions import SYSTEM
from lockgate.tenancy.model import Role
from tests.controlplane.conftest import Admin


async def two_tenants(admin: Admin) -> dict[str, str]:
    actions = admin.services.actions
    a = await actions.create_organization(SYSTEM, "tenant-a")
    b = await actions.create_organization(SYSTEM, "tenant-b")
    pa = await actions.create_project(SYSTEM, a.id, "a-main")
    pb = await actions.create_project(SYSTEM, b.id, "b-main")
    _, b_key = await actions.create_api_key(
        SYSTEM, organization_id=b.id, project_id=pb.id, name="b inference"
    )
    return {
        "a": a.id, "b": b.id, "pa": pa.id, "pb": pb.id, "b_key_id": b_key.split("_")[1],
        "a_admin": await admin.service_key(a.id, pa.id, Role.ORG_ADMIN),
    }  # fmt: skip


async def test_org_admin_cannot_see_or_touch_another_tenant(admin: Admin) -> None:
    t = await two_tenants(admin)
    async with admin.client(t["a_admin"]) as client:
        own = await client.get(f"/admin/v1/organizations/{t['a']}/projects")
        assert own.status_code == 200
        assert [p["id"] for p in own.json()["data"]] == [t["pa"]]
        b, pb, kb = t["b"], t["pb"], t["b_key_id"]
        attempts = [
            ("GET", f"/admin/v1/organizations/{b}", None),
            ("GET", f"/admin/v1/organizations/{b}/projects", None),
            ("POST", f"/admin/v1/organizations/{b}/projects", {"name": "x"}),
            ("GET", f"/admin/v1/organizations/{b}/projects/{pb}", None),
            ("GET", f"/admin/v1/organizations/{b}/projects/{pb}/api_keys", None),
            ("POST", f"/admin/v1/organizations/{b}/projects/{pb}/api_keys", {"name": "x"}),
            ("GET", f"/admin/v1/organizations/{b}/api_keys/{kb}", None),
            ("POST", f"/admin/v1/organizations/{b}/api_keys/{kb}/revoke", None),
            ("POST", f"/admin/v1/organizations/{b}/api_keys/{kb}/rotate", {}),
            ("GET", f"/admin/v1/organizations/{b}/audit", None),
            ("POST", f"/admin/v1/organizations/{b}/service_accounts", {"name": "x"}),
            ("POST", f"/admin/v1/organizations/{b}/role_bindings", {"subject_id": "sa_x"}),
            # B's key through A's own organisation path: still not found.
            ("GET", f"/admin/v1/organizations/{t['a']}/api_keys/{kb}", None),
            ("POST", f"/admin/v1/organizations/{t['a']}/api_keys/{kb}/revoke", None),
            ("GET", f"/admin/v1/organizations/{t['a']}/projects/{pb}", None),
        ]
        for method, path, body in attempts:
            response = await client.request(method, path, json=body)
            assert response.status_code == 404, (method, path, response.text)
            assert response.json()["error"]["code"] in ("not_found",), path
        listed = await client.get("/admin/v1/organizations")
        assert [o["id"] for o in listed.json()["data"]] == [t["a"]]


@pytest.mark.parametrize(
    ("role", "create_key", "read_audit", "create_project"),
    [
        (Role.ORG_ADMIN, 201, 200, 201),
        (Role.PROJECT_ADMIN, 201, 403, 403),
        (Role.MEMBER, 403, 403, 403),
        (Role.VIEWER, 403, 403, 403),
        (Role.AUDITOR, 403, 200, 403),
    ],
)
async def test_roles_get_exactly_their_permissions(
    admin: Admin, role: Role, create_key: int, read_audit: int, create_project: int
) -> None:
    actions = admin.services.actions
    org = await actions.create_organization(SYSTEM, f"org-{role.value}")
    project = await actions.create_project(SYSTEM, org.id, "main")
    scoped = project.id if role in (Role.PROJECT_ADMIN, Role.MEMBER, Role.VIEWER) else None
    key = await admin.service_key(org.id, project.id, role, role_project=scoped)
    base = f"/admin/v1/organizations/{org.id}"
    async with admin.client(key) as client:
        made = await client.post(f"{base}/projects/{project.id}/api_keys", json={"name": "k"})
        assert made.status_code == create_key, made.text
        assert (await client.get(f"{base}/audit")).status_code == read_audit
        assert (await client.post(f"{base}/projects", json={"name": "p2"})).status_code == (
            create_project
        )


async def test_no_escalation_through_role_bindings(admin: Admin) -> None:
    t = await two_tenants(admin)
    account = await admin.services.actions.create_service_account(SYSTEM, t["a"], "victim")
    async with admin.client(t["a_admin"]) as client:
        base = f"/admin/v1/organizations/{t['a']}/role_bindings"
        denied = await client.post(base, json={"subject_id": account.id, "role": "org_owner"})
        assert denied.status_code == 403
        superadmin = await client.post(base, json={"subject_id": account.id, "role": "superadmin"})
        assert superadmin.status_code == 403
        ok = await client.post(base, json={"subject_id": account.id, "role": "project_admin",
                                           "project_id": t["pa"]})  # fmt: skip
        assert ok.status_code == 201, ok.text
        assert ok.json()["role"] == "project_admin"


async def test_key_secret_is_shown_once_and_never_listed(admin: Admin) -> None:
    t = await two_tenants(admin)
    base = f"/admin/v1/organizations/{t['a']}"
    async with admin.client(t["a_admin"]) as client:
        made = await client.post(f"{base}/projects/{t['pa']}/api_keys", json={"name": "ci"})
        secret = made.json()["key"]
        assert secret.startswith("lg_")
        listing = await client.get(f"{base}/projects/{t['pa']}/api_keys")
        text_listing = listing.text
        assert secret not in text_listing
        assert secret.split("_")[2] not in text_listing
        assert "hash" not in text_listing
        one = await client.get(f"{base}/api_keys/{made.json()['id']}")
        assert "key" not in one.json()


async def test_revocation_through_the_api_reaches_the_data_plane_cache(admin: Admin) -> None:
    t = await two_tenants(admin)
    base = f"/admin/v1/organizations/{t['a']}"
    authenticator = admin.services.authenticator
    async with admin.client(t["a_admin"]) as client:
        made = (await client.post(f"{base}/projects/{t['pa']}/api_keys", json={"name": "x"})).json()
        key_id, secret = made["id"], made["key"].split("_")[2]
        await authenticator.check_api_key(key_id, secret)  # cached now
        revoked = await client.post(f"{base}/api_keys/{key_id}/revoke")
        assert revoked.json()["status"] == "revoked"
    with pytest.raises(Exception, match="revoked"):
        await authenticator.check_api_key(key_id, secret)


async def test_rotation_returns_a_new_secret_and_keeps_the_old_one_in_grace(admin: Admin) -> None:
    t = await two_tenants(admin)
    base = f"/admin/v1/organizations/{t['a']}"
    authenticator = admin.services.authenticator
    async with admin.client(t["a_admin"]) as client:
        made = (await client.post(f"{base}/projects/{t['pa']}/api_keys", json={"name": "x"})).json()
        rotated = await client.post(f"{base}/api_keys/{made['id']}/rotate", json={"grace_s": 60})
        assert rotated.status_code == 200
        assert rotated.json()["key"] != made["key"]
        assert rotated.json()["previous_expires_at"] is not None
    for key in (made["key"], rotated.json()["key"]):
        await authenticator.check_api_key(made["id"], key.split("_")[2])


async def test_every_change_is_audited_and_tampering_is_detected(admin: Admin) -> None:
    t = await two_tenants(admin)
    base = f"/admin/v1/organizations/{t['a']}"
    superadmin = await admin.service_key(t["a"], t["pa"], Role.SUPERADMIN)
    async with admin.client(t["a_admin"]) as client:
        await client.post(
            f"{base}/projects", json={"name": "audited"}, headers={"x-request-id": "req-42"}
        )
        entries = (await client.get(f"{base}/audit", params={"action": "project.create"})).json()
        newest = entries["data"][0]
        assert newest["after"]["name"] == "audited"
        assert newest["actor"].startswith("api_key:")
        assert newest["request_id"] == "req-42"
        assert newest["source_ip"] == "127.0.0.1"
    async with admin.client(superadmin) as client:
        intact = (await client.get("/admin/v1/audit/verify")).json()
        assert intact["intact"] is True
        assert intact["entries"] > 5
        async with admin.services.store._engine.begin() as conn:  # the attacker's SQL
            await conn.execute(
                text("UPDATE audit_log SET after = :a WHERE seq = :s"),
                {"a": '{"name": "forged"}', "s": newest["seq"]},
            )
        broken = (await client.get("/admin/v1/audit/verify")).json()
        assert broken == {
            "intact": False, "entries": newest["seq"] - 1, "first_broken_seq": newest["seq"],
        }  # fmt: skip


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({}, 401, "missing_api_key"),
        ({"authorization": "Bearer nope"}, 401, "invalid_api_key"),
        ({"authorization": "Basic abc"}, 401, "invalid_api_key"),
    ],
)
async def test_admin_api_refuses_bad_credentials(
    admin: Admin, headers: dict[str, str], status: int, code: str
) -> None:
    async with httpx.AsyncClient(base_url=admin.url) as client:
        response = await client.get("/admin/v1/organizations", headers=headers)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


async def test_inference_only_key_cannot_administer(admin: Admin) -> None:
    t = await two_tenants(admin)
    _, key = await admin.services.actions.create_api_key(
        SYSTEM, organization_id=t["a"], project_id=t["pa"], name="inference"
    )
    async with admin.client(key) as client:
        response = await client.get("/admin/v1/organizations")
    assert response.status_code == 403


async def test_errors_have_one_shape(admin: Admin) -> None:
    t = await two_tenants(admin)
    async with admin.client(t["a_admin"]) as client:
        bad = await client.post(f"/admin/v1/organizations/{t['a']}/projects", json={"nam": "x"})
        assert bad.status_code == 400
        assert set(bad.json()["error"]) == {"message", "type", "code", "param"}
        missing = await client.get("/admin/v1/nothing")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "unknown_endpoint"
        duplicate = await client.post(
            f"/admin/v1/organizations/{t['a']}/projects", json={"name": "a-main"}
        )
        assert duplicate.status_code == 409


async def test_project_model_changes_reach_cached_keys_at_once(admin: Admin) -> None:
    t = await two_tenants(admin)
    base = f"/admin/v1/organizations/{t['a']}"
    authenticator = admin.services.authenticator
    async with admin.client(t["a_admin"]) as client:
        made = (await client.post(f"{base}/projects/{t['pa']}/api_keys", json={"name": "x"})).json()
        key_id, secret = made["id"], made["key"].split("_")[2]
        assert (await authenticator.check_api_key(key_id, secret)).project.allowed_models == ()
        patched = await client.patch(
            f"{base}/projects/{t['pa']}", json={"allowed_models": ["small-model"]}
        )
        assert patched.status_code == 200, patched.text
        assert patched.json()["allowed_models"] == ["small-model"]
        assert patched.json()["name"] == "a-main"
    grant = await authenticator.check_api_key(key_id, secret)
    assert grant.project.allowed_models == ("small-model",)


async def test_role_bindings_can_be_listed_and_revoked_without_escalation(admin: Admin) -> None:
    t = await two_tenants(admin)
    base = f"/admin/v1/organizations/{t['a']}"
    project_admin = await admin.service_key(
        t["a"], t["pa"], Role.PROJECT_ADMIN, role_project=t["pa"]
    )
    async with admin.client(t["a_admin"]) as client:
        bindings = (await client.get(f"{base}/role_bindings")).json()["data"]
        by_role = {b["role"]: b for b in bindings}
        assert {"org_admin", "project_admin"} <= set(by_role)
    async with admin.client(project_admin) as client:
        # A project admin may not take away an org admin's role.
        denied = await client.delete(f"{base}/role_bindings/{by_role['org_admin']['id']}")
        assert denied.status_code == 403
        assert (await client.get(f"{base}/projects/{t['pa']}/api_keys")).status_code == 200
    async with admin.client(t["a_admin"]) as client:
        gone = await client.delete(f"{base}/role_bindings/{by_role['project_admin']['id']}")
        assert gone.status_code == 200
    async with admin.client(project_admin) as client:
        # Roles are read per admin request: the revocation applies to the very next call.
        assert (await client.get(f"{base}/projects/{t['pa']}/api_keys")).status_code == 404
