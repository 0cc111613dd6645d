"""The admin API with bearer JWTs from a real (local) identity provider: roles,
organisation and project come from the token's claims."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from lockgate.controlplane.actions import SYSTEM
from tests.controlplane.conftest import Admin, started_admin
from tests.controlplane.tenants import assert_error, audit_entries
from tests.tenancy.idp import AUDIENCE, ISSUER, FakeIdp, SigningKey


@pytest.fixture(scope="module")
def signer() -> SigningKey:
    return SigningKey.rsa("rsa-admin")


@pytest.fixture
async def idp(signer: SigningKey) -> AsyncIterator[FakeIdp]:
    server = FakeIdp(keys=[signer])
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def jwt_admin(
    database_url: str | None, tmp_path: Path, idp: FakeIdp, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Admin]:
    monkeypatch.delenv("LOCKGATE_MASTER_KEYS", raising=False)
    issuer = {"issuer": ISSUER, "audiences": [AUDIENCE], "jwks_url": idp.url}
    async with started_admin(database_url, tmp_path, {"jwt_issuers": [issuer]}) as admin:
        yield admin


async def test_org_admin_token_acts_in_its_organization_only(
    jwt_admin: Admin, signer: SigningKey
) -> None:
    actions = jwt_admin.services.actions
    a = await actions.create_organization(SYSTEM, "tenant-a")
    b = await actions.create_organization(SYSTEM, "tenant-b")
    pb = await actions.create_project(SYSTEM, b.id, "b-main")
    token = signer.mint(sub="alice", org_id=a.id, project_id=None, roles=["org_admin"])
    async with jwt_admin.client(token) as client:
        made = await client.post(f"/admin/v1/organizations/{a.id}/projects", json={"name": "web"})
        assert made.status_code == 201, made.text
        assert made.json()["organization_id"] == a.id
        listed = await client.get("/admin/v1/organizations")
        assert [o["id"] for o in listed.json()["data"]] == [a.id]
        for method, path in (
            ("POST", f"/admin/v1/organizations/{b.id}/projects"),
            ("GET", f"/admin/v1/organizations/{b.id}"),
            ("PATCH", f"/admin/v1/organizations/{b.id}/projects/{pb.id}"),
            ("DELETE", f"/admin/v1/organizations/{b.id}/projects/{pb.id}"),
            ("GET", f"/admin/v1/organizations/{b.id}/users"),
        ):
            body = {"name": "x"} if method in ("POST", "PATCH") else None
            response = await client.request(method, path, json=body)
            assert_error(response, 404, "not_found")
        # Its own organisation's ceiling is the deployment's to set, not its admin's.
        ceiling = await client.patch(f"/admin/v1/organizations/{a.id}", json={"allowed_models": []})
        assert_error(ceiling, 403, "permission_denied")
    [entry] = await audit_entries(jwt_admin, a.id, "project.create")
    assert entry["actor"] == f"jwt:{ISSUER}#alice"


async def test_token_roles_decide_within_the_organization(
    jwt_admin: Admin, signer: SigningKey
) -> None:
    org = await jwt_admin.services.actions.create_organization(SYSTEM, "tenant")
    projects = f"/admin/v1/organizations/{org.id}/projects"
    member = signer.mint(org_id=org.id, project_id=None, roles=["member"])
    async with jwt_admin.client(member) as client:
        assert_error(await client.post(projects, json={"name": "x"}), 403, "permission_denied")
    unknown_role = signer.mint(org_id=org.id, project_id=None, roles=["root"])
    async with jwt_admin.client(unknown_role) as client:  # no role: a stranger to the org
        assert_error(await client.post(projects, json={"name": "x"}), 404, "not_found")
    expired = signer.mint(org_id=org.id, project_id=None, roles=["org_admin"], exp=1000)
    async with jwt_admin.client(expired) as client:
        assert_error(await client.post(projects, json={"name": "x"}), 401, "token_expired")
    superadmin = signer.mint(org_id=None, project_id=None, roles=["superadmin"])
    async with jwt_admin.client(superadmin) as client:
        made = await client.post(projects, json={"name": "by-superadmin"})
        assert made.status_code == 201
        ceiling = await client.patch(
            f"/admin/v1/organizations/{org.id}", json={"allowed_models": ["m1"]}
        )
        assert ceiling.status_code == 200
