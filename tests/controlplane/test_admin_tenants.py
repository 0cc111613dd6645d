"""Organisations and projects through the admin API: update, delete, model ceilings,
limits, and who may change which (policy apart from plain updates)."""

from __future__ import annotations

import pytest

from lockgate.controlplane.actions import SYSTEM
from lockgate.errors import AuthenticationFailed
from lockgate.tenancy.model import Role
from tests.controlplane.conftest import Admin
from tests.controlplane.tenants import assert_error, audit_entries, two_tenants


async def test_organization_update_needs_org_policy_for_ceiling_and_limits(admin: Admin) -> None:
    t = await two_tenants(admin)
    async with admin.client(t.a_admin) as client:
        renamed = await client.patch(t.base_a, json={"name": "tenant-a2", "metadata": {"tier": 1}})
        assert renamed.status_code == 200, renamed.text
        assert renamed.json()["name"] == "tenant-a2"
        assert renamed.json()["metadata"] == {"tier": 1}
        # An organisation's own admin may not raise its ceiling or limits.
        for body in ({"allowed_models": ["m1"]}, {"limits": {"requests_per_minute": 10}}):
            assert_error(await client.patch(t.base_a, json=body), 403, "permission_denied")
        assert_error(await client.patch(t.base_b, json={"name": "x"}), 404, "not_found")
        assert_error(await client.patch(t.base_a, json={"name": "tenant-b"}), 409, "conflict")
    async with admin.client(t.superadmin) as client:
        policy = {"allowed_models": ["m1", "m2"], "limits": {"requests_per_minute": 60}}
        updated = await client.patch(t.base_a, json=policy)
        assert updated.status_code == 200, updated.text
        assert updated.json()["allowed_models"] == ["m1", "m2"]
        assert updated.json()["limits"]["requests_per_minute"] == 60
        assert updated.json()["name"] == "tenant-a2"  # fields left out stay as they were
        bad = await client.patch(t.base_a, json={"limits": {"burst": 5}})  # burst needs a rate
        assert_error(bad, 400, "invalid_parameter")
        bad = await client.patch(t.base_a, json={"limits": {"requests_per_hour": 5}})
        assert_error(bad, 400, "invalid_parameter")
        missing = await client.patch("/admin/v1/organizations/org_nope", json={"name": "x"})
        assert_error(missing, 404, "not_found")
    [entry, _rename] = await audit_entries(admin, t.a, "organization.update")
    assert entry["before"] == {"allowed_models": [], "limits": {}}
    assert entry["after"] == {"allowed_models": ["m1", "m2"], "limits": {"requests_per_minute": 60}}


async def test_organization_ceiling_bounds_projects_keys_and_cached_grants(admin: Admin) -> None:
    t = await two_tenants(admin)
    authenticator = admin.services.authenticator
    async with admin.client(t.a_admin) as client:
        made = await client.post(f"{t.base_a}/projects/{t.pa}/api_keys", json={"name": "k"})
        key_id, secret = made.json()["id"], made.json()["key"].split("_")[2]
        assert (await authenticator.check_api_key(key_id, secret)).organization.allowed_models == ()
    async with admin.client(t.superadmin) as client:
        ceiling = await client.patch(t.base_a, json={"allowed_models": ["m1", "m2"]})
        assert ceiling.status_code == 200
    # The cached grant was dropped on the organisation's invalidation, and reloaded.
    grant = await authenticator.check_api_key(key_id, secret)
    assert grant.organization.allowed_models == ("m1", "m2")
    async with admin.client(t.a_admin) as client:
        outside = await client.post(
            f"{t.base_a}/projects", json={"name": "p3", "allowed_models": ["m1", "m3"]}
        )
        error = assert_error(outside, 422, "outside_allowed_models")
        assert error["param"] == "allowed_models"
        assert "m3" in error["message"]
        inside = await client.post(
            f"{t.base_a}/projects", json={"name": "p1", "allowed_models": ["m1"]}
        )
        assert inside.status_code == 201
        p1 = inside.json()["id"]
        widen = await client.patch(f"{t.base_a}/projects/{p1}", json={"allowed_models": ["m3"]})
        assert_error(widen, 422, "outside_allowed_models")
        # Keys lie within their project's list, or the organisation's if the project's is open.
        key_outside = await client.post(
            f"{t.base_a}/projects/{p1}/api_keys", json={"name": "k", "allowed_models": ["m2"]}
        )
        assert_error(key_outside, 422, "outside_allowed_models")
        open_project = await client.post(
            f"{t.base_a}/projects/{t.pa}/api_keys", json={"name": "k", "allowed_models": ["m3"]}
        )
        assert_error(open_project, 422, "outside_allowed_models")
        key_inside = await client.post(
            f"{t.base_a}/projects/{p1}/api_keys", json={"name": "k", "allowed_models": ["m1"]}
        )
        assert key_inside.status_code == 201, key_inside.text


async def test_project_policy_is_not_the_project_admins_to_change(admin: Admin) -> None:
    t = await two_tenants(admin)
    project_admin = await admin.service_key(t.a, t.pa, Role.PROJECT_ADMIN, role_project=t.pa)
    project = f"{t.base_a}/projects/{t.pa}"
    async with admin.client(project_admin) as client:
        assert (await client.patch(project, json={"name": "renamed"})).status_code == 200
        for body in (
            {"limits": {"tokens_per_minute": 10**9}},
            {"model_limits": {"m1": {"concurrent_requests": 100}}},
            {"allowed_models": ["m1"]},
        ):
            assert_error(await client.patch(project, json=body), 403, "permission_denied")
        assert_error(await client.delete(project), 403, "permission_denied")
    authenticator = admin.services.authenticator
    async with admin.client(t.a_admin) as client:
        made = await client.post(f"{project}/api_keys", json={"name": "k"})
        key_id, secret = made.json()["id"], made.json()["key"].split("_")[2]
        await authenticator.check_api_key(key_id, secret)  # cached now
        limits = {
            "limits": {"tokens_per_minute": 1000, "spend_per_day": "2.50"},
            "model_limits": {"m1": {"concurrent_requests": 2}},
        }
        patched = await client.patch(project, json=limits)
        assert patched.status_code == 200, patched.text
        assert patched.json()["limits"]["tokens_per_minute"] == 1000
        assert patched.json()["limits"]["spend_per_day"] == "2.50"
        assert patched.json()["model_limits"]["m1"]["concurrent_requests"] == 2
        assert patched.json()["name"] == "renamed"
        bad = await client.patch(project, json={"model_limits": {"m1": {"rpm": 2}}})
        assert_error(bad, 400, "invalid_parameter")
        assert (await client.get(project)).json()["model_limits"]["m1"]["concurrent_requests"] == 2
    grant = await authenticator.check_api_key(key_id, secret)
    assert grant.project.limits.tokens_per_minute == 1000
    assert grant.project.model_limits["m1"].concurrent_requests == 2


async def test_deleting_a_project_deletes_its_keys_everywhere(admin: Admin) -> None:
    t = await two_tenants(admin)
    authenticator = admin.services.authenticator
    async with admin.client(t.a_admin) as client:
        created = await client.post(f"{t.base_a}/projects", json={"name": "doomed"})
        doomed = created.json()["id"]
        made = await client.post(f"{t.base_a}/projects/{doomed}/api_keys", json={"name": "k"})
        key_id, secret = made.json()["id"], made.json()["key"].split("_")[2]
        await authenticator.check_api_key(key_id, secret)  # cached now
        assert_error(await client.delete(f"{t.base_b}/projects/{t.pb}"), 404, "not_found")
        assert_error(await client.delete(f"{t.base_a}/projects/{t.pb}"), 404, "not_found")
        deleted = await client.delete(f"{t.base_a}/projects/{doomed}")
        assert deleted.status_code == 200, deleted.text
        assert deleted.json()["deleted_api_key_ids"] == [key_id]
        assert deleted.json()["name"] == "doomed"
        assert_error(await client.get(f"{t.base_a}/projects/{doomed}"), 404, "not_found")
        assert_error(await client.get(f"{t.base_a}/api_keys/{key_id}"), 404, "not_found")
        assert_error(await client.delete(f"{t.base_a}/projects/{doomed}"), 404, "not_found")
    with pytest.raises(AuthenticationFailed, match="Incorrect API key"):
        await authenticator.check_api_key(key_id, secret)
    [entry] = await audit_entries(admin, t.a, "project.delete")
    assert entry["before"]["name"] == "doomed"
    assert entry["after"] == {"deleted_api_key_ids": [key_id]}


async def test_deleting_an_organization(admin: Admin) -> None:
    t = await two_tenants(admin)
    actions = admin.services.actions
    c = await actions.create_organization(SYSTEM, "tenant-c")
    pc = await actions.create_project(SYSTEM, c.id, "c-main")
    owner = await admin.service_key(c.id, pc.id, Role.ORG_OWNER)
    c_admin = await admin.service_key(c.id, pc.id, Role.ORG_ADMIN)
    await actions.create_user(SYSTEM, c.id, email="carol@c.example", name="Carol")
    base_c = f"/admin/v1/organizations/{c.id}"
    async with admin.client(c_admin) as client:
        assert_error(await client.delete(base_c), 403, "permission_denied")  # not an owner
    async with admin.client(owner) as client:
        refused = assert_error(await client.delete(base_c), 409, "conflict")
        assert "still has projects" in refused["message"]
        forced = await client.delete(base_c, params={"force": "true"})
        assert_error(forced, 403, "permission_denied")  # force is the superadmin's
        assert_error(await client.delete(t.base_b), 404, "not_found")
    async with admin.client(t.a_admin) as client:
        assert_error(await client.delete(base_c), 404, "not_found")
    authenticator = admin.services.authenticator
    owner_id, owner_secret = owner.split("_")[1], owner.split("_")[2]
    await authenticator.check_api_key(owner_id, owner_secret)  # cached now
    async with admin.client(t.superadmin) as client:
        gone = await client.delete(base_c, params={"force": "true"})
        assert gone.status_code == 200, gone.text
        assert gone.json()["deleted_project_ids"] == [pc.id]
        assert owner_id in gone.json()["deleted_api_key_ids"]
        assert_error(await client.get(base_c), 404, "not_found")
        listed = await client.get("/admin/v1/organizations")
        assert c.id not in [o["id"] for o in listed.json()["data"]]
        # Without projects, no force is needed: users and service accounts go with it.
        empty = await actions.create_organization(SYSTEM, "tenant-d")
        await actions.create_user(SYSTEM, empty.id, email="dan@d.example", name="Dan")
        await actions.create_service_account(SYSTEM, empty.id, "robot")
        assert (await client.delete(f"/admin/v1/organizations/{empty.id}")).status_code == 200
    with pytest.raises(AuthenticationFailed):
        await authenticator.check_api_key(owner_id, owner_secret)
    [entry] = await audit_entries(admin, c.id, "organization.delete")
    assert entry["after"]["forced"] is True
    assert entry["after"]["deleted_users"] == 1
    assert entry["before"]["name"] == "tenant-c"


async def test_new_tenant_routes_keep_tenants_apart(admin: Admin) -> None:
    """Org A's admin gets 404 for every new route on B's objects, whether addressed
    through B's organisation or through A's own."""
    t = await two_tenants(admin)
    a, b = t.base_a, t.base_b
    attempts = [
        ("PATCH", b, {"name": "x"}),
        ("DELETE", b, None),
        ("PATCH", f"{b}/projects/{t.pb}", {"name": "x"}),
        ("DELETE", f"{b}/projects/{t.pb}", None),
        ("PATCH", f"{a}/projects/{t.pb}", {"name": "x"}),
        ("GET", f"{b}/users", None),
        ("POST", f"{b}/users", {"email": "x@y.z", "name": "x"}),
        ("GET", f"{b}/users/{t.b_user}", None),
        ("GET", f"{a}/users/{t.b_user}", None),
        ("PATCH", f"{a}/users/{t.b_user}", {"is_disabled": True}),
        ("DELETE", f"{a}/users/{t.b_user}", None),
        ("GET", f"{b}/service_accounts", None),
        ("GET", f"{a}/service_accounts/{t.b_account}", None),
        ("PATCH", f"{b}/service_accounts/{t.b_account}", {"is_disabled": True}),
        ("PATCH", f"{a}/service_accounts/{t.b_account}", {"is_disabled": True}),
        ("DELETE", f"{a}/service_accounts/{t.b_account}", None),
        ("PATCH", f"{b}/api_keys/{t.b_key_id}", {"name": "x"}),
        ("PATCH", f"{a}/api_keys/{t.b_key_id}", {"name": "x"}),
        ("PUT", f"{b}/upstream_secrets/openai", {"value": "sk-x"}),
        ("GET", f"{b}/upstream_secrets", None),
        ("DELETE", f"{b}/upstream_secrets/openai", None),
    ]
    async with admin.client(t.a_admin) as client:
        for method, path, body in attempts:
            response = await client.request(method, path, json=body)
            assert response.status_code == 404, (method, path, response.text)
            assert response.json()["error"]["code"] == "not_found", path
    # Nothing of B's changed.
    b_user = await admin.services.store.users.get(t.b_user, organization_id=t.b)
    assert b_user.is_disabled is False


async def test_prompt_logging_is_the_org_admins_to_turn_on_and_reaches_cached_keys(
    admin: Admin,
) -> None:
    t = await two_tenants(admin)
    project_admin = await admin.service_key(t.a, t.pa, Role.PROJECT_ADMIN, role_project=t.pa)
    project = f"{t.base_a}/projects/{t.pa}"
    async with admin.client(project_admin) as client:
        refused = await client.patch(project, json={"log_prompts": True})
        assert_error(refused, 403, "permission_denied")
        assert (await client.get(project)).json()["log_prompts"] is False
    authenticator = admin.services.authenticator
    async with admin.client(t.a_admin) as client:
        made = await client.post(f"{project}/api_keys", json={"name": "k"})
        key_id, secret = made.json()["id"], made.json()["key"].split("_")[2]
        assert not (await authenticator.check_api_key(key_id, secret)).project.log_prompts
        patched = await client.patch(project, json={"log_prompts": True})
        assert patched.status_code == 200, patched.text
        assert patched.json()["log_prompts"] is True
    grant = await authenticator.check_api_key(key_id, secret)
    assert grant.project.log_prompts  # the cached grant was dropped and reloaded
    newest = (await audit_entries(admin, t.a, "project.update"))[0]
    assert (newest["before"], newest["after"]) == ({"log_prompts": False}, {"log_prompts": True})
