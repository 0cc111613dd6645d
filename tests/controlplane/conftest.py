"""An admin API served on loopback over a real store (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from lockgate.config import GatewaySpec, resolve
from lockgate.controlplane.actions import SYSTEM
from lockgate.controlplane.admin.app import AdminServer
from lockgate.serve import prepare
from lockgate.services import Services
from lockgate.tenancy.model import PrincipalKind, Role, Scope
from tests.databases import create_database, drop_database, postgres_admin_dsn


@dataclass
class Admin:
    services: Services
    url: str

    def client(self, key: str | None) -> httpx.AsyncClient:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=10)

    async def service_key(
        self, org_id: str, project_id: str, role: Role, *, role_project: str | None = None
    ) -> str:
        """A service account in ``org_id`` holding ``role``, and an admin key acting for it."""
        actions = self.services.actions
        account = await actions.create_service_account(SYSTEM, org_id, f"sa-{role.value}")
        await actions.create_role_binding(
            SYSTEM,
            subject_kind=PrincipalKind.SERVICE_ACCOUNT,
            subject_id=account.id,
            role=role,
            organization_id=None if role is Role.SUPERADMIN else org_id,
            project_id=role_project,
        )
        _, key = await actions.create_api_key(
            SYSTEM,
            organization_id=org_id,
            project_id=project_id,
            name=f"{role.value} key",
            scopes=(Scope.ADMIN, Scope.INFERENCE),
            service_account_id=account.id,
        )
        return key


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str | None]:
    if request.param == "sqlite":
        yield None
        return
    admin = postgres_admin_dsn()
    url = await create_database(admin)
    try:
        yield url
    finally:
        await drop_database(admin, make_url(url).database or "")


@pytest.fixture
async def admin(database_url: str | None, tmp_path: Path) -> AsyncIterator[Admin]:
    pepper = tmp_path / "pepper"
    pepper.write_text("hex:" + secrets.token_hex(32))
    spec = GatewaySpec.model_validate(
        {
            "server": {"port": 0, "admin_port": 0, "data_dir": str(tmp_path / "data")},
            "database": {"url": database_url},
            "auth": {"api_key_pepper": {"file": str(pepper)}},
        }
    )
    config = resolve(spec)
    await asyncio.to_thread(prepare, config)
    services = await Services.start(config)
    server = AdminServer(services.admin_app(), "127.0.0.1", 0)
    task = asyncio.create_task(server.serve())
    try:
        yield Admin(services, f"http://127.0.0.1:{server.port}")
    finally:
        server.stop()
        await task
        await services.close()
