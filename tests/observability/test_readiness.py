"""Readiness turns false when a dependency goes away and true again when it returns.

Each dependency is really taken away: a private Redis killed by its PID, a
private PostgreSQL database closed to connections (its sessions terminated),
every replica of a model stopped. Checks run when the test calls ``refresh``
(the background loop does the same every ``interval_s``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import orjson
import pytest
from sqlalchemy.engine import make_url

from lockgate.config import GatewaySpec
from lockgate.observability.readiness import ModelsCheck, PingCheck, Readiness, RedisPing
from lockgate.sim import SimServer
from lockgate.store import Store
from lockgate.store.repositories.request_debug import request_debug
from tests.databases import create_database, drop_database, postgres_admin_dsn
from tests.observability.private_redis import PrivateRedis
from tests.routing.fleet import FAST, model, replicas, spec
from tests.support import RunningGateway, raw_request, running_gateway


def body(readiness: Readiness) -> dict[str, Any]:
    result: dict[str, Any] = orjson.loads(readiness.answer()[1])
    return result


async def eventually(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def test_before_the_first_check_the_process_is_not_ready() -> None:
    readiness = Readiness([])
    assert readiness.answer()[0] == 503
    assert body(readiness)["status"] == "starting"
    await readiness.refresh()
    assert readiness.answer()[0] == 200
    assert body(readiness) == {"status": "ready", "checked_at": body(readiness)["checked_at"],
                               "checks": {}}  # fmt: skip


async def test_redis_killed_then_restarted() -> None:
    with PrivateRedis() as redis:
        ping = RedisPing(redis.url, timeout_s=0.5)
        readiness = Readiness([PingCheck("redis", ping)], timeout_s=1.0)
        try:
            await readiness.refresh()
            assert readiness.answer()[0] == 200
            assert body(readiness)["checks"]["redis"]["status"] == "ok"

            redis.kill()
            await readiness.refresh()
            assert readiness.answer()[0] == 503
            gone = body(readiness)
            assert gone["status"] == "not_ready"
            assert gone["checks"]["redis"]["status"] == "failing"
            assert gone["checks"]["redis"]["required"] is True
            # The error's type only: a driver's message may name hosts.
            assert gone["checks"]["redis"]["error"] in ("ConnectionError", "timeout")
            assert str(redis.port) not in readiness.answer()[1].decode()

            redis.start()
            await readiness.refresh()
            assert readiness.answer()[0] == 200
            assert body(readiness)["checks"]["redis"]["status"] == "ok"
        finally:
            await ping.close()


@pytest.fixture
async def private_database() -> AsyncIterator[str]:
    admin = postgres_admin_dsn()
    url = await create_database(admin)
    try:
        yield url
    finally:
        await drop_database(admin, make_url(url).database or "")


async def _allow_connections(database: str, allow: bool) -> None:
    conn = await asyncpg.connect(postgres_admin_dsn())
    try:
        await conn.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {str(allow).lower()}')
        if not allow:
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()",
                database,
            )
    finally:
        await conn.close()


async def test_the_store_closed_to_connections_then_reopened(private_database: str) -> None:
    database = make_url(private_database).database or ""
    store = await Store.open(private_database, check_schema=False)
    readiness = Readiness([PingCheck("store", request_debug(store).ping)], timeout_s=5.0)
    try:
        await readiness.refresh()
        assert readiness.answer()[0] == 200
        assert body(readiness)["checks"]["store"]["latency_ms"] >= 0

        await _allow_connections(database, False)
        await readiness.refresh()
        assert readiness.answer()[0] == 503
        assert body(readiness)["checks"]["store"]["status"] == "failing"

        await _allow_connections(database, True)
        await readiness.refresh()
        assert readiness.answer()[0] == 200, body(readiness)
    finally:
        await _allow_connections(database, True)
        await store.close()


def _models(gw: RunningGateway, required: list[str] | None) -> ModelsCheck:
    router = gw.gateway.dataplane.router
    return ModelsCheck(router, ["chat", "other"], required, asyncio.get_running_loop().time)


async def test_every_replica_of_a_model_down_then_back() -> None:
    routing = {
        "health_check": {
            "path": "/health",
            "interval_s": 0.05,
            "timeout_s": 0.5,
            "unhealthy_threshold": 1,
            "healthy_threshold": 1,
        }
    }
    async with replicas(FAST, FAST) as (chat_sim, other_sim):
        port = chat_sim.port
        models = [model("chat", [chat_sim], routing=routing), model("other", [other_sim])]
        async with running_gateway(spec(models)) as gw:
            every = Readiness([], _models(gw, None))
            only_other = Readiness([], _models(gw, ["other"]))
            await every.refresh()
            assert every.answer()[0] == 200
            assert body(every)["checks"]["model:chat"] == {
                "status": "ok", "required": True, "healthy_deployments": 1, "deployments": 1,
            }  # fmt: skip

            await chat_sim.close()
            member = gw.gateway.dataplane.router.plan_for("chat").pool.members[0]
            await eventually(lambda: not member.is_up)
            await every.refresh()
            await only_other.refresh()
            assert every.answer()[0] == 503
            down = body(every)["checks"]["model:chat"]
            assert down["status"] == "failing"
            assert down["deployment_states"] == {"chat-r0": "check_failing"}
            assert body(every)["checks"]["model:other"]["status"] == "ok"
            # A model that is not required is reported, and does not make the process unready.
            assert only_other.answer()[0] == 200
            assert body(only_other)["checks"]["model:chat"]["required"] is False

            async with SimServer(FAST, host="127.0.0.1", port=port):
                await eventually(lambda: member.is_up)
                await every.refresh()
                assert every.answer()[0] == 200


class CountingCheck:
    """A dependency that is always up and counts how often it was asked."""

    name = "counted"

    def __init__(self) -> None:
        self.calls = 0

    async def check(self) -> dict[str, Any]:
        self.calls += 1
        return {}


async def test_probes_are_answered_from_the_cached_verdict() -> None:
    counted = CountingCheck()
    readiness = Readiness([counted], interval_s=3600)
    async with replicas(FAST) as (sim,), running_gateway(spec([model("chat", [sim])])) as gw:
        gw.gateway.dataplane.readiness = readiness.answer
        assert (await raw_request(gw.port, "GET", "/readyz")).status == 503  # not checked yet
        await readiness.refresh()
        answers = [await raw_request(gw.port, "GET", "/readyz") for _ in range(50)]
    assert {a.status for a in answers} == {200}
    assert {a.body for a in answers} == {readiness.answer()[1]}
    assert counted.calls == 1  # fifty probes, one check
    assert orjson.loads(answers[0].body)["checks"]["counted"]["status"] == "ok"


def test_required_models_must_name_configured_models() -> None:
    models = [model("chat", [1])]
    assert spec(models).observability.readiness.required_models is None  # every model
    with pytest.raises(ValueError, match="required_models names 'nope'"):
        GatewaySpec.model_validate(
            {
                "models": models,
                "observability": {"readiness": {"required_models": ["chat", "nope"]}},
            }
        )
