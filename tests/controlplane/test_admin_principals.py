"""Users and service accounts through the admin API, and what disabling or deleting a
service account does to its keys on both planes."""

from __future__ import annotations

import pytest

from lockgate.dataplane.pipeline.authenticate import KeyNotUsable
from lockgate.errors import AuthenticationFailed
from lockgate.tenancy.model import Role
from tests.controlplane.conftest import Admin
from tests.controlplane.tenants import assert_error, audit_entries, two_tenants


async def test_user_lifecycle(admin: Admin) -> None:
    t = await two_tenants(admin)
    users = f"{t.base_a}/users"
    async with admin.client(t.a_admin) as client:
        made = await client.post(users, json={"email": "Alice@Example.com", "name": "Alice"})
        assert made.status_code == 201, made.text
        alice = made.json()
        assert alice["email"] == "alice@example.com"  # one person, whatever the case
        assert alice["organization_id"] == t.a
        assert alice["is_disabled"] is False
        again = await client.post(users, json={"email": "ALICE@example.com", "name": "A"})
        assert_error(again, 409, "conflict")
        for body in (
            {"email": "not-an-email", "name": "x"},
            {"email": "a@b.c"},
            {"email": "a@b.c", "name": "x", "role": "superadmin"},  # unknown field
        ):
            assert_error(await client.post(users, json=body), 400, "invalid_parameter")
        bob = (await client.post(users, json={"email": "bob@example.com", "name": "Bob"})).json()

        first = await client.get(users, params={"limit": 1})
        assert [u["id"] for u in first.json()["data"]] == [alice["id"]]
        assert first.json()["has_more"] is True
        rest = await client.get(users, params={"after": first.json()["last_id"]})
        assert [u["id"] for u in rest.json()["data"]] == [bob["id"]]
        assert (await client.get(f"{users}/{alice['id']}")).json()["name"] == "Alice"

        patched = await client.patch(f"{users}/{alice['id']}", json={"is_disabled": True})
        assert patched.json()["is_disabled"] is True
        assert patched.json()["name"] == "Alice"
        assert_error(await client.patch(f"{users}/user_nope", json={"name": "x"}), 404, "not_found")
        bind = await client.post(
            f"{t.base_a}/role_bindings",
            json={"subject_kind": "user", "subject_id": bob["id"], "role": "member"},
        )
        assert bind.status_code == 201
        deleted = await client.delete(f"{users}/{bob['id']}")
        assert deleted.status_code == 200
        assert_error(await client.get(f"{users}/{bob['id']}"), 404, "not_found")
        bindings = (await client.get(f"{t.base_a}/role_bindings")).json()["data"]
        assert bob["id"] not in [b["subject_id"] for b in bindings]  # went with the user
    [entry] = await audit_entries(admin, t.a, "user.update")
    assert entry["before"] == {"is_disabled": False}
    assert entry["after"] == {"is_disabled": True}
    assert [e["before"]["email"] for e in await audit_entries(admin, t.a, "user.delete")] == [
        "bob@example.com"
    ]


@pytest.mark.parametrize(
    ("role", "read", "manage"),
    [
        (Role.ORG_OWNER, 200, 201),
        (Role.ORG_ADMIN, 200, 201),
        (Role.PROJECT_ADMIN, 403, 403),  # manages bindings on its project, not people
        (Role.MEMBER, 403, 403),
        (Role.AUDITOR, 403, 403),
    ],
)
async def test_who_may_read_and_manage_principals(
    admin: Admin, role: Role, read: int, manage: int
) -> None:
    t = await two_tenants(admin)
    scoped = t.pa if role in (Role.PROJECT_ADMIN, Role.MEMBER) else None
    key = await admin.service_key(t.a, t.pa, role, role_project=scoped, account_name="caller")
    async with admin.client(key) as client:
        assert (await client.get(f"{t.base_a}/users")).status_code == read
        assert (await client.get(f"{t.base_a}/service_accounts")).status_code == read
        user = await client.post(f"{t.base_a}/users", json={"email": "x@y.z", "name": "x"})
        assert user.status_code == manage, user.text
        account = await client.post(f"{t.base_a}/service_accounts", json={"name": "robot"})
        assert account.status_code == manage


async def test_disabling_a_service_account_stops_its_keys_on_both_planes(admin: Admin) -> None:
    t = await two_tenants(admin)
    robot_key = await admin.service_key(t.a, t.pa, Role.PROJECT_ADMIN, role_project=t.pa)
    robot_id, robot_secret = robot_key.split("_")[1], robot_key.split("_")[2]
    authenticator = admin.services.authenticator
    accounts = f"{t.base_a}/service_accounts"
    async with admin.client(t.a_admin) as client:
        listed = (await client.get(accounts)).json()["data"]
        robot = next(a for a in listed if a["name"] == "sa-project_admin")
        assert (await client.get(f"{accounts}/{robot['id']}")).json()["is_disabled"] is False
    await authenticator.check_api_key(robot_id, robot_secret)  # cached on the data plane
    async with admin.client(robot_key) as client:
        assert (await client.get(f"{t.base_a}/projects/{t.pa}")).status_code == 200

    async with admin.client(t.a_admin) as client:
        disabled = await client.patch(f"{accounts}/{robot['id']}", json={"is_disabled": True})
        assert disabled.status_code == 200
        assert disabled.json()["is_disabled"] is True
    with pytest.raises(KeyNotUsable, match="service account is disabled") as refused:
        await authenticator.check_api_key(robot_id, robot_secret)
    assert refused.value.code == "api_key_disabled"
    async with admin.client(robot_key) as client:
        response = await client.get(f"{t.base_a}/projects/{t.pa}")
        assert_error(response, 401, "api_key_disabled")

    async with admin.client(t.a_admin) as client:
        enabled = await client.patch(f"{accounts}/{robot['id']}", json={"is_disabled": False})
        assert enabled.json()["is_disabled"] is False
    await authenticator.check_api_key(robot_id, robot_secret)  # works again everywhere
    [first, _] = await audit_entries(admin, t.a, "service_account.update")
    assert first["after"] == {"is_disabled": False}


async def test_deleting_a_service_account_revokes_its_keys(admin: Admin) -> None:
    t = await two_tenants(admin)
    robot_key = await admin.service_key(t.a, t.pa, Role.MEMBER, account_name="robot")
    robot_id, robot_secret = robot_key.split("_")[1], robot_key.split("_")[2]
    authenticator = admin.services.authenticator
    await authenticator.check_api_key(robot_id, robot_secret)  # cached now
    accounts = f"{t.base_a}/service_accounts"
    async with admin.client(t.a_admin) as client:
        [robot] = [a for a in (await client.get(accounts)).json()["data"] if a["name"] == "robot"]
        deleted = await client.delete(f"{accounts}/{robot['id']}")
        assert deleted.status_code == 200, deleted.text
        assert deleted.json()["revoked_api_key_ids"] == [robot_id]
        assert_error(await client.get(f"{accounts}/{robot['id']}"), 404, "not_found")
        assert_error(await client.delete(f"{accounts}/{robot['id']}"), 404, "not_found")
        # The key stays listed, revoked, no longer acting for anyone.
        key = (await client.get(f"{t.base_a}/api_keys/{robot_id}")).json()
        assert key["status"] == "revoked"
        assert key["service_account_id"] is None
        bindings = (await client.get(f"{t.base_a}/role_bindings")).json()["data"]
        assert robot["id"] not in [b["subject_id"] for b in bindings]
    with pytest.raises(AuthenticationFailed, match="revoked"):
        await authenticator.check_api_key(robot_id, robot_secret)


async def test_keys_for_a_service_account_need_the_right_to_grant_its_roles(
    admin: Admin,
) -> None:
    """A key acting for a service account carries its roles: a project admin must not
    mint a key for an org admin's account (escalation through keys)."""
    t = await two_tenants(admin)
    project_admin = await admin.service_key(t.a, t.pa, Role.PROJECT_ADMIN, role_project=t.pa)
    async with admin.client(t.a_admin) as client:
        accounts = (await client.get(f"{t.base_a}/service_accounts")).json()["data"]
    by_name = {a["name"]: a["id"] for a in accounts}
    keys = f"{t.base_a}/projects/{t.pa}/api_keys"
    async with admin.client(project_admin) as client:
        for name in ("sa-org_admin", "sa-superadmin"):
            body = {"name": "x", "scopes": ["admin"], "service_account_id": by_name[name]}
            assert_error(await client.post(keys, json=body), 403, "permission_denied")
        other_tenant = {"name": "x", "service_account_id": t.b_account}
        assert_error(await client.post(keys, json=other_tenant), 404, "not_found")
        peer = {"name": "x", "service_account_id": by_name["sa-project_admin"]}
        assert (await client.post(keys, json=peer)).status_code == 201
