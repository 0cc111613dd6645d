"""Runtime deployments: engines register and heartbeat; operators add and remove.

Short intervals (0.2 s heartbeats, 0.8 s expiry) so expiry is observed in a test.
The engines are simulators; traffic is counted at each one.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from lockgate.sim import SimServer
from tests.databases import create_database, drop_database, postgres_admin_dsn
from tests.routing.fleet import FAST, chat, replicas, url
from tests.routing.lifecycle_stack import Stack, config_for, keys, stack

REDIS_URL = os.environ.get("LOCKGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
FAST_EXPIRY = {"heartbeat_interval_s": 0.2, "expire_after_s": 0.8, "refresh_s": 30}


def models(static: SimServer) -> list[dict[str, Any]]:
    return [
        {
            "name": "m",
            "routing": {"strategy": "weighted_random"},
            "deployments": [{"name": "static", "base_url": url(static)}],
        },
        {"name": "empty", "deployments": []},
    ]


def members(stack: Stack, entry: str) -> list[str]:
    pool = stack.gateway.dataplane.router.pool_of(entry)
    assert pool is not None
    return [m.name for m in pool.members]


async def until(predicate: Any, timeout_s: float = 5.0) -> float:
    """Wait for ``predicate()``; how long it took."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout_s:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)
    return time.monotonic() - started


def registration(name: str, engine: SimServer, model: str = "m") -> dict[str, Any]:
    return {"model": model, "name": name, "base_url": url(engine), "capacity": 4}


async def test_a_registered_engine_serves_until_its_heartbeats_stop(tmp_path: Path) -> None:
    async with replicas(FAST, FAST) as (static, engine):
        spec = config_for(models(static), tmp_path, registration=FAST_EXPIRY)
        async with stack(spec) as gw:
            credentials = await keys(gw.services)
            async with gw.admin(credentials.engine) as client:
                answer = await client.post(
                    "/admin/v1/deployments/register", json=registration("e1", engine)
                )
                assert answer.status_code == 201, answer.text
                assert answer.json()["heartbeat_interval_s"] == 0.2
                await until(lambda: "e1" in members(gw, "m"))
                for _ in range(20):
                    assert (await chat(gw.port, "m")).status == 200
                assert engine.engine.requests_total > 0  # the registered engine takes traffic
                # Heartbeats keep it: well past one expiry interval, it is still there.
                for _ in range(8):
                    beat = await client.post(
                        "/admin/v1/deployments/heartbeat", json={"model": "m", "name": "e1"}
                    )
                    assert beat.status_code == 204
                    await asyncio.sleep(0.2)
                assert "e1" in members(gw, "m")
                last_beat = time.monotonic()
                # Silence: every worker drops it once the expiry passes, with no janitor.
                await until(lambda: "e1" not in members(gw, "m"))
                # At its expiry, plus one registry read (slack for a loaded machine).
                assert time.monotonic() - last_beat < 0.8 + 1.0
                served = engine.engine.requests_total
                for _ in range(10):
                    assert (await chat(gw.port, "m")).status == 200
                assert engine.engine.requests_total == served
                late = await client.post(
                    "/admin/v1/deployments/heartbeat", json={"model": "m", "name": "e1"}
                )
                assert late.status_code == 404
                assert late.json()["error"]["code"] == "registration_expired"


async def test_deregistering_stops_traffic_at_once(tmp_path: Path) -> None:
    async with replicas(FAST, FAST) as (static, engine):
        spec = config_for(models(static), tmp_path, registration={"expire_after_s": 60})
        async with stack(spec) as gw:
            credentials = await keys(gw.services)
            async with gw.admin(credentials.engine) as client:
                await client.post(
                    "/admin/v1/deployments/register", json=registration("e1", engine, "empty")
                )
                await until(lambda: members(gw, "empty") == ["e1"])
                assert (await chat(gw.port, "empty")).status == 200
                gone = await client.post(
                    "/admin/v1/deployments/deregister", json={"model": "empty", "name": "e1"}
                )
                assert gone.status_code == 204
                await until(lambda: members(gw, "empty") == [])
            refused = await chat(gw.port, "empty")
            assert refused.status == 503  # no deployment at all: a fast, clear answer
            assert engine.engine.requests_total == 1


async def test_operators_add_and_remove_deployments_live(tmp_path: Path) -> None:
    async with (
        replicas(FAST, FAST) as (static, extra),
        stack(config_for(models(static), tmp_path)) as gw,
    ):
        credentials = await keys(gw.services)
        async with gw.admin(credentials.superadmin) as client:
            added = await client.post(
                "/admin/v1/deployments",
                json={
                    "model": "empty",
                    "name": "extra",
                    "base_url": url(extra),
                    "tags": {"region": "eu"},
                },
            )
            assert added.status_code == 201, added.text
            assert added.json()["source"] == "admin"
            await until(lambda: members(gw, "empty") == ["extra"])
            assert (await chat(gw.port, "empty")).status == 200
            listed = (await client.get("/admin/v1/deployments")).json()["data"]
            assert {(d["model"], d["name"], d["source"]) for d in listed} == {
                ("m", "static", "config"),
                ("empty", "extra", "admin"),
            }
            clash = await client.post(
                "/admin/v1/deployments",
                json={"model": "m", "name": "static", "base_url": url(extra)},
            )
            assert clash.status_code == 409
            unknown = await client.post(
                "/admin/v1/deployments",
                json={"model": "nope", "name": "x", "base_url": url(extra)},
            )
            assert unknown.status_code == 404
            bad_url = await client.post(
                "/admin/v1/deployments", json={"model": "m", "name": "x", "base_url": "ftp://h"}
            )
            assert bad_url.status_code == 422
            removed = await client.delete(
                "/admin/v1/deployments", params={"model": "empty", "name": "extra"}
            )
            assert removed.status_code == 204
            await until(lambda: members(gw, "empty") == [])
            audit = [
                e.action for e in await gw.services.store.audit.list(organization_id=None, limit=50)
            ]
            assert "deployment.add" in audit
            assert "deployment.remove" in audit


async def test_only_engines_and_the_superadmin_may_touch_deployments(tmp_path: Path) -> None:
    async with replicas(FAST) as (static,), stack(config_for(models(static), tmp_path)) as gw:
        credentials = await keys(gw.services)
        body = registration("e1", static)
        async with gw.admin(credentials.member) as client:  # an org admin: not enough
            assert (
                await client.post("/admin/v1/deployments/register", json=body)
            ).status_code == 403
            assert (await client.post("/admin/v1/deployments", json=body)).status_code == 403
            assert (await client.get("/admin/v1/deployments")).status_code == 403
        async with gw.admin(credentials.engine) as client:  # registers, manages nothing
            assert (await client.post("/admin/v1/deployments", json=body)).status_code == 403
            assert (await client.get("/admin/v1/rollouts")).status_code == 403
        async with gw.admin(None) as client:
            assert (
                await client.post("/admin/v1/deployments/register", json=body)
            ).status_code == 401
        assert members(gw, "m") == ["static"]


async def test_registration_can_be_confined_to_the_engines_network(tmp_path: Path) -> None:
    async with replicas(FAST) as (static,):
        spec = config_for(
            models(static), tmp_path, registration={"allowed_networks": ["10.0.0.0/8"]}
        )
        async with stack(spec) as gw:
            credentials = await keys(gw.services)
            async with gw.admin(credentials.engine) as client:
                refused = await client.post(
                    "/admin/v1/deployments/register", json=registration("e1", static)
                )
            assert refused.status_code == 422
            assert "allowed_networks" in refused.json()["error"]["message"]


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    admin = postgres_admin_dsn()
    database = await create_database(admin)
    try:
        yield database
    finally:
        await drop_database(admin, make_url(database).database or "")


async def test_replicas_sharing_postgres_and_redis_see_registrations_and_expiry(
    tmp_path: Path, postgres_url: str
) -> None:
    """Two gateway replicas: a registration through one reaches the other's pools within
    a second (Redis announcement), and both drop it when its heartbeats stop."""
    async with replicas(FAST, FAST) as (static, engine):
        shared: dict[str, Any] = {
            "database_url": postgres_url,
            "redis_url": REDIS_URL,
            "registration": FAST_EXPIRY,
        }
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        pepper = "hex:" + "ab" * 32
        spec_a = config_for(models(static), tmp_path / "a", pepper=pepper, **shared)
        spec_b = config_for(models(static), tmp_path / "b", pepper=pepper, **shared)
        async with stack(spec_a) as a, stack(spec_b, serve_admin=False) as b:
            credentials = await keys(a.services)
            async with a.admin(credentials.engine) as client:
                await client.post("/admin/v1/deployments/register", json=registration("e1", engine))
                await until(lambda: "e1" in members(b, "m"))  # announced through Redis
                assert "e1" in members(a, "m")
            await until(lambda: "e1" not in members(a, "m") and "e1" not in members(b, "m"))
