"""An admin API served on loopback over a real store (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy.engine import make_url

from lockgate.config import GatewaySpec, resolve
from lockgate.controlplane.actions import SYSTEM
from lockgate.controlplane.admin.app import AdminServer
from lockgate.serve import prepare
from lockgate.services import Services
from lockgate.sim import SimServer
from lockgate.tenancy.model import PrincipalKind, Role, Scope
from tests.controlplane.operator import MODEL, Deployment, clean_env
from tests.databases import create_database, drop_database, postgres_admin_dsn


@dataclass
class Admin:
    services: Services
    url: str

    def client(self, key: str | None) -> httpx.AsyncClient:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=10)

    async def service_key(
        self,
        org_id: str,
        project_id: str,
        role: Role,
        *,
        role_project: str | None = None,
        account_name: str | None = None,
    ) -> str:
        """A service account in ``org_id`` holding ``role``, and an admin key acting for it."""
        actions = self.services.actions
        name = account_name or f"sa-{role.value}"
        account = await actions.create_service_account(SYSTEM, org_id, name)
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


@asynccontextmanager
async def started_admin(
    database_url: str | None, tmp_path: Path, auth: dict[str, Any] | None = None
) -> AsyncIterator[Admin]:
    """Services and the admin API for one gateway worker; ``auth`` adds to its auth config."""
    pepper = tmp_path / "pepper"
    pepper.write_text("hex:" + secrets.token_hex(32))
    spec = GatewaySpec.model_validate(
        {
            "server": {"port": 0, "admin_port": 0, "data_dir": str(tmp_path / "data")},
            "database": {"url": database_url},
            "auth": {"api_key_pepper": {"file": str(pepper)}, **(auth or {})},
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


@pytest.fixture
async def admin(
    database_url: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Admin]:
    """The admin API of a deployment without a master key (LOCKGATE_MASTER_KEYS unset)."""
    monkeypatch.delenv("LOCKGATE_MASTER_KEYS", raising=False)
    async with started_admin(database_url, tmp_path) as started:
        yield started


@pytest.fixture
async def sealed_admin(
    database_url: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Admin]:
    """The admin API of a deployment with a master key: secrets at rest can be stored."""
    monkeypatch.setenv("LOCKGATE_MASTER_KEYS", "1:" + base64.b64encode(os.urandom(32)).decode())
    async with started_admin(database_url, tmp_path) as started:
        yield started


@pytest.fixture(params=["sqlite", "postgresql"])
async def deployment(
    request: pytest.FixtureRequest, tmp_path: Path, sim: SimServer
) -> AsyncIterator[Deployment]:
    """A gateway config (two workers, the simulator as ``MODEL``) for operator commands."""
    data_dir = tmp_path / "data"
    config = tmp_path / "gateway.yaml"
    spec = {
        # Two workers: each caches keys, and on SQLite they share the polled bus log.
        "server": {"host": "127.0.0.1", "port": 0, "workers": 2, "data_dir": str(data_dir)},
        "auth": {"allow_anonymous": False},
        "models": [{"name": MODEL, "deployments": [{"name": "d1", "base_url": sim.base_url}]}],
        # Limits across two workers need Redis; these tests are about tenancy, not limits.
        "admission": {"enabled": False},
    }
    config.write_text(yaml.safe_dump(spec))
    env = dict(clean_env())
    if request.param == "sqlite":
        yield Deployment(config, env, data_dir, None)
        return
    admin_dsn = postgres_admin_dsn()
    url = await create_database(admin_dsn)
    # Through the environment, not the file: the commands must apply overrides as serve does.
    env["LOCKGATE_DATABASE_URL"] = url
    env["LOCKGATE_API_KEY_PEPPER"] = "hex:" + secrets.token_hex(32)
    try:
        yield Deployment(config, env, data_dir, url)
    finally:
        await drop_database(admin_dsn, make_url(url).database or "")
