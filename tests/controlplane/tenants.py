"""Two tenants with admins, as most admin API tests start, and assertions they share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from lockgate.controlplane.actions import SYSTEM
from lockgate.tenancy.model import Role
from tests.controlplane.conftest import Admin


@dataclass(frozen=True)
class Tenants:
    a: str  # organisation A, where the test's credentials live
    pa: str  # A's project
    b: str  # organisation B, another tenant
    pb: str  # B's project
    b_key_id: str  # an inference key of B
    b_account: str  # a service account of B
    b_user: str  # a user of B
    a_admin: str  # an org_admin key of A
    superadmin: str  # a superadmin key (bound deployment-wide; lives in A)

    @property
    def base_a(self) -> str:
        return f"/admin/v1/organizations/{self.a}"

    @property
    def base_b(self) -> str:
        return f"/admin/v1/organizations/{self.b}"


async def two_tenants(admin: Admin) -> Tenants:
    actions = admin.services.actions
    a = await actions.create_organization(SYSTEM, "tenant-a")
    b = await actions.create_organization(SYSTEM, "tenant-b")
    pa = await actions.create_project(SYSTEM, a.id, "a-main")
    pb = await actions.create_project(SYSTEM, b.id, "b-main")
    _, b_key = await actions.create_api_key(
        SYSTEM, organization_id=b.id, project_id=pb.id, name="b inference"
    )
    b_account = await actions.create_service_account(SYSTEM, b.id, "b-robot")
    b_user = await actions.create_user(SYSTEM, b.id, email="bob@b.example", name="Bob")
    return Tenants(
        a=a.id,
        pa=pa.id,
        b=b.id,
        pb=pb.id,
        b_key_id=b_key.split("_")[1],
        b_account=b_account.id,
        b_user=b_user.id,
        a_admin=await admin.service_key(a.id, pa.id, Role.ORG_ADMIN),
        superadmin=await admin.service_key(a.id, pa.id, Role.SUPERADMIN),
    )


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The one error shape, with the expected status and code; returns the error."""
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "code", "param"}, error
    assert error["code"] == code, error
    assert response.headers["x-lockgate-error-code"] == code
    return error


async def audit_entries(admin: Admin, org_id: str, action: str) -> list[dict[str, Any]]:
    """The organisation's audit entries for ``action``, newest first (read from the store)."""
    entries = await admin.services.store.audit.list(organization_id=org_id, action=action)
    return [{"before": e.before, "after": e.after, "actor": e.actor} for e in entries]
