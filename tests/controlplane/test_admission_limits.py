"""Limits set through the admin API apply on the data plane at once (SQLite and PostgreSQL).

One worker's services (store, bus, key cache, admitter) serve both the admin
API and a gateway in front of the simulator, as ``lockgate serve`` does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from lockgate.config import GatewaySpec, RuntimeConfig, resolve
from lockgate.controlplane.actions import SYSTEM
from lockgate.serve import Gateway
from lockgate.sim import SimServer
from lockgate.tenancy.model import Role
from tests.controlplane.conftest import Admin, started_admin
from tests.support import chat_as

CHAT = b'{"model":"sim-chat","messages":[{"role":"user","content":"hi"}],"max_tokens":2}'


@dataclass
class Stack:
    admin: Admin
    gateway: Gateway
    root: httpx.AsyncClient  # a superadmin's admin client
    org_id: str

    async def project(self, name: str) -> str:
        answer = await self.root.post(
            f"/admin/v1/organizations/{self.org_id}/projects", json={"name": name}
        )
        assert answer.status_code == 201, answer.text
        project_id: str = answer.json()["id"]
        return project_id

    async def key(self, project_id: str, **body: object) -> tuple[str, str]:
        answer = await self.root.post(
            f"/admin/v1/organizations/{self.org_id}/projects/{project_id}/api_keys",
            json={"name": "caller", **body},
        )
        assert answer.status_code == 201, answer.text
        return answer.json()["id"], answer.json()["key"]

    async def patch(self, path: str, body: object) -> None:
        answer = await self.root.patch(f"/admin/v1/organizations/{self.org_id}{path}", json=body)
        assert answer.status_code == 200, answer.text

    async def call(self, key: str) -> tuple[int, dict[str, str], dict[str, object]]:
        return await chat_as(self.gateway.port, key, CHAT)


@pytest.fixture
async def stack(database_url: str | None, tmp_path: Path, sim: SimServer) -> AsyncIterator[Stack]:
    async with started_admin(database_url, tmp_path) as admin:
        services = admin.services
        config = gateway_config(sim)
        gateway = Gateway(
            config,
            authenticator=services.authenticator,
            authorizer=services.authorizer,
            admitter=services.admitter,
        )
        await gateway.start()
        org = await services.actions.create_organization(SYSTEM, "acme")
        project = await services.actions.create_project(SYSTEM, org.id, "ops")
        root_key = await admin.service_key(org.id, project.id, Role.SUPERADMIN)
        async with admin.client(root_key) as root:
            try:
                yield Stack(admin, gateway, root, org.id)
            finally:
                await gateway.stop(drain_timeout_s=1)


def gateway_config(sim: SimServer) -> RuntimeConfig:
    """The data plane's side: one model served by the simulator (services come from the admin)."""
    model = {"name": "sim-chat", "deployments": [{"name": "d", "base_url": sim.base_url}]}
    return resolve(GatewaySpec.model_validate({"server": {"port": 0}, "models": [model]}))


async def test_a_project_limit_set_through_the_admin_api_applies_at_once(stack: Stack) -> None:
    project = await stack.project("search")
    _, key = await stack.key(project)
    assert (await stack.call(key))[0] == 200
    await stack.patch(f"/projects/{project}", {"limits": {"requests_per_minute": 2}})
    # The change reached the cached key: a fresh counter of 2 for this project.
    statuses = [(await stack.call(key))[0] for _ in range(3)]
    assert statuses == [200, 200, 429]
    status, headers, body = await stack.call(key)
    assert status == 429
    error = body["error"]
    assert isinstance(error, dict)
    assert error["code"] == "rate_limit_exceeded"
    assert "project requests per minute limit (2 per minute)" in str(error["message"])
    assert int(headers["retry-after"]) >= 1
    # Raising it applies at once too.
    await stack.patch(f"/projects/{project}", {"limits": {"requests_per_minute": 100}})
    assert (await stack.call(key))[0] == 200


async def test_an_organisation_limit_caps_the_sum_of_its_projects(stack: Stack) -> None:
    first, second = await stack.project("one"), await stack.project("two")
    _, key_one = await stack.key(first)
    _, key_two = await stack.key(second)
    await stack.patch("", {"limits": {"requests_per_day": 3}})
    statuses = [(await stack.call(k))[0] for k in (key_one, key_two, key_one, key_two)]
    assert statuses == [200, 200, 200, 429]
    status, _, body = await stack.call(key_one)
    assert status == 429
    assert "organization requests per day limit" in str(body["error"])


async def test_key_and_project_model_limits_each_apply(stack: Stack) -> None:
    project = await stack.project("keys")
    key_id, key = await stack.key(project, limits={"requests_per_day": 1})
    _, other = await stack.key(project)
    assert (await stack.call(key))[0] == 200
    status, _, body = await stack.call(key)
    assert status == 429
    assert "key requests per day limit" in str(body["error"])
    assert (await stack.call(other))[0] == 200, "another key of the project is unaffected"
    await stack.patch(
        f"/projects/{project}", {"model_limits": {"sim-chat": {"requests_per_day": 2}}}
    )
    # A fresh (project, model) counter: "other" gets 2 more, then the pair is spent.
    assert [(await stack.call(other))[0] for _ in range(3)] == [200, 200, 429]
    # Lifting the key's own limit does not lift the pair's.
    await stack.patch(f"/api_keys/{key_id}", {"limits": {}})
    status, _, body = await stack.call(key)
    assert status == 429
    assert "project model requests per day limit" in str(body["error"])


async def test_limits_are_validated_at_the_admin_edge(stack: Stack) -> None:
    project = await stack.project("bad")
    for bad in (
        {"requests_per_minute": 0},
        {"burst": 5},
        {"requests_per_hour": 5},
        {"spend_per_day": "-1"},
    ):
        answer = await stack.root.patch(
            f"/admin/v1/organizations/{stack.org_id}/projects/{project}", json={"limits": bad}
        )
        assert answer.status_code == 400, (bad, answer.text)
        assert answer.json()["error"]["code"] == "invalid_parameter"
