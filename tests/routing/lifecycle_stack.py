"""A gateway wired as ``serve`` wires it — services, data plane, admin API — for lifecycle tests.

``stack`` starts one worker (``run_gateway``'s steps: ``Services.start``, the admin
server, the data plane, ``services.watch`` which attaches the lifecycle) on a real
store; ``keys`` mints a superadmin key, an engine key and a key with neither.
Anonymous inference, admission off: these tests are about routing.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from lockgate.config import GatewaySpec, resolve
from lockgate.controlplane.actions import SYSTEM
from lockgate.controlplane.admin.app import AdminServer
from lockgate.dataplane.lifecycle import ModelLifecycle
from lockgate.dataplane.pipeline.settle import Settlers
from lockgate.serve import Gateway, prepare
from lockgate.services import Services
from lockgate.tenancy.model import PrincipalKind, Role, Scope


@dataclass
class Stack:
    services: Services
    gateway: Gateway
    admin_url: str

    @property
    def port(self) -> int:
        return self.gateway.port

    @property
    def lifecycle(self) -> ModelLifecycle:
        assert self.services.lifecycle is not None
        return self.services.lifecycle

    def admin(self, key: str | None) -> httpx.AsyncClient:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        return httpx.AsyncClient(base_url=self.admin_url, headers=headers, timeout=10)

    async def synced(self) -> None:
        """Wait until this worker has re-read the registry once more."""
        loads = self.lifecycle.loads
        self.lifecycle.changed("test")
        for _ in range(400):
            if self.lifecycle.loads > loads:
                return
            await asyncio.sleep(0.005)
        raise AssertionError("the lifecycle did not reload")


def config_for(
    models: list[dict[str, Any]],
    tmp_path: Path,
    *,
    database_url: str | None = None,
    redis_url: str | None = None,
    registration: dict[str, Any] | None = None,
    pepper: str | None = None,
) -> GatewaySpec:
    pepper_file = tmp_path / "pepper"
    if not pepper_file.exists():
        pepper_file.write_text(pepper or "hex:" + secrets.token_hex(32))
    return GatewaySpec.model_validate(
        {
            "server": {"port": 0, "admin_port": 0, "data_dir": str(tmp_path / "data")},
            "database": {"url": database_url},
            "redis": {"url": redis_url, "key_prefix": f"lgtest{secrets.token_hex(4)}:"},
            "auth": {"allow_anonymous": True, "api_key_pepper": {"file": str(pepper_file)}},
            "admission": {"enabled": False},
            "metering": {"enabled": False},
            "observability": {"access_log": None},
            "routing": {"registration": registration or {}},
            "models": models,
        }
    )


@asynccontextmanager
async def stack(spec: GatewaySpec, *, serve_admin: bool = True) -> AsyncIterator[Stack]:
    config = resolve(spec)
    await asyncio.to_thread(prepare, config)
    services = await Services.start(config)
    server = AdminServer(services.admin_app(), "127.0.0.1", 0) if serve_admin else None
    task = asyncio.create_task(server.serve()) if server is not None else None
    gateway = Gateway(
        config,
        settler=Settlers(*services.settlers),
        authenticator=services.authenticator,
        authorizer=services.authorizer,
        admitter=services.admitter,
    )
    try:
        await services.watch(config, gateway.dataplane.router, asyncio.get_running_loop().time)
        await gateway.start()
        assert services.lifecycle is not None
        await services.lifecycle.loaded.wait()  # the registry was read once
        admin_url = f"http://127.0.0.1:{server.port}" if server is not None else ""
        yield Stack(services, gateway, admin_url)
    finally:
        await gateway.stop(drain_timeout_s=1.0)
        if server is not None and task is not None:
            server.stop()
            await task
        await services.close()


@dataclass
class Keys:
    superadmin: str
    engine: str
    member: str  # an admin-scoped key of a service account with no deployment rights


async def keys(services: Services) -> Keys:
    actions = services.actions
    org = await actions.create_organization(SYSTEM, f"platform-{secrets.token_hex(3)}")
    project = await actions.create_project(SYSTEM, org.id, "engines")

    async def key_for(role: Role) -> str:
        account = await actions.create_service_account(SYSTEM, org.id, f"sa-{role.value}")
        await actions.create_role_binding(
            SYSTEM,
            subject_kind=PrincipalKind.SERVICE_ACCOUNT,
            subject_id=account.id,
            role=role,
            organization_id=None if role is Role.SUPERADMIN else org.id,
        )
        _, key = await actions.create_api_key(
            SYSTEM,
            organization_id=org.id,
            project_id=project.id,
            name=f"{role.value} key",
            scopes=(Scope.ADMIN,),
            service_account_id=account.id,
        )
        return key

    return Keys(
        await key_for(Role.SUPERADMIN), await key_for(Role.ENGINE), await key_for(Role.ORG_ADMIN)
    )
