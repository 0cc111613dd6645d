"""Request debugging through the admin API: a key's next N requests captured in detail,
read back per request id, scoped to the tenant, audited, never holding secrets or prompts.

A real worker in-process: the services ``lockgate serve`` builds, the data plane
in front of the simulator, and the admin API, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lockgate.config import GatewaySpec, resolve
from lockgate.controlplane.actions import SYSTEM
from lockgate.controlplane.admin.app import AdminServer
from lockgate.dataplane.pipeline.settle import Settlers
from lockgate.serve import Gateway, prepare
from lockgate.services import Services
from lockgate.sim import SimServer
from lockgate.tenancy.model import Role
from tests.controlplane.conftest import Admin
from tests.controlplane.tenants import assert_error, audit_entries, two_tenants
from tests.support import RawResponse, raw_request

PROMPT = "the secret plans of the river otters"


@dataclass
class Worker:
    admin: Admin
    port: int

    async def chat(self, key: str, **headers: str) -> RawResponse:
        body = {"model": "sim-chat", "messages": [{"role": "user", "content": PROMPT}]}
        return await raw_request(
            self.port,
            "POST",
            "/v1/chat/completions",
            json.dumps(body).encode(),
            {"authorization": f"Bearer {key}", "content-type": "application/json", **headers},
        )


@asynccontextmanager
async def worker(database_url: str | None, tmp_path: Path, sim: SimServer) -> AsyncIterator[Worker]:
    """What ``run_gateway`` builds for one worker, minus signals and the process itself."""
    pepper = tmp_path / "pepper"
    pepper.write_text("hex:" + secrets.token_hex(32))
    spec = GatewaySpec.model_validate(
        {
            "server": {"port": 0, "data_dir": str(tmp_path / "data")},
            "database": {"url": database_url},
            "auth": {"api_key_pepper": {"file": str(pepper)}},
            "admission": {"enabled": False},
            "observability": {"access_log": None},
            "routing": {"defaults": {"retries": {"backoff_base_ms": 1, "backoff_max_ms": 2}}},
            "models": [
                {
                    "name": "sim-chat",
                    "deployments": [
                        {"name": "d1", "base_url": sim.base_url, "forward_headers": ["x-sim-*"]}
                    ],
                }
            ],
        }
    )
    config = resolve(spec)
    await asyncio.to_thread(prepare, config)
    services = await Services.start(config)
    gateway = Gateway(
        config,
        settler=Settlers(*services.settlers),
        authenticator=services.authenticator,
        authorizer=services.authorizer,
        admitter=services.admitter,
    )
    port = await gateway.start()
    server = AdminServer(services.admin_app(), "127.0.0.1", 0)
    task = asyncio.create_task(server.serve())
    try:
        yield Worker(Admin(services, f"http://127.0.0.1:{server.port}"), port)
    finally:
        await gateway.stop(drain_timeout_s=1.0)
        server.stop()
        await task
        await services.close()


async def traced(services: Services, key_id: str, timeout_s: float = 5.0) -> None:
    """Until this worker has heard of the key's session (the bus, then a reload)."""
    debugger = services.request_debug
    assert debugger is not None
    deadline = time.monotonic() + timeout_s
    while f"api_key:{key_id}" not in debugger.traced:
        assert time.monotonic() < deadline, "the debug session never reached the data plane"
        await asyncio.sleep(0.01)


async def settled(services: Services) -> None:
    """Everything captured and metered so far is in the store."""
    assert services.request_debug is not None
    assert services.ledger is not None
    await services.request_debug.flush()
    await services.ledger.flush()


async def test_a_debug_session_captures_the_next_requests_of_one_key(
    database_url: str | None, tmp_path: Path, sim: SimServer
) -> None:
    async with worker(database_url, tmp_path, sim) as w:
        admin, services = w.admin, w.admin.services
        t = await two_tenants(admin)
        actions = services.actions
        _, key = await actions.create_api_key(
            SYSTEM, organization_id=t.a, project_id=t.pa, name="traced"
        )
        _, other_key = await actions.create_api_key(
            SYSTEM, organization_id=t.a, project_id=t.pa, name="not traced"
        )
        key_id = key.split("_")[1]
        viewer = await admin.service_key(t.a, t.pa, Role.VIEWER)
        b_admin = await admin.service_key(t.b, t.pb, Role.ORG_ADMIN, account_name="b-admin")

        async with admin.client(t.a_admin) as client:
            started = await client.post(
                f"{t.base_a}/api_keys/{key_id}/debug", json={"requests": 2, "ttl_s": 600}
            )
            assert started.status_code == 201, started.text
            session = started.json()
            assert (session["requested"], session["remaining"]) == (2, 2)
            assert session["is_active"] is True
            await traced(services, key_id)

            ok = await w.chat(key)
            failed = await w.chat(key, **{"x-sim-fault": "error-503"})  # every attempt fails
            late = await w.chat(key)  # the session had room for two
            other = await w.chat(other_key)
            assert [r.status for r in (ok, failed, late, other)] == [200, 503, 200, 200]
            await settled(services)

            detail = await client.get(f"/admin/v1/requests/{ok.headers['x-request-id']}")
            assert detail.status_code == 200, detail.text
            found = detail.json()
            [usage] = found["usage_records"]
            assert usage["model"] == "sim-chat"
            assert usage["deployment"] == "d1"
            assert usage["organization_id"] == t.a
            assert usage["prompt_tokens"] > 0
            [debug] = found["debug_records"]
            captured = debug["detail"]
            assert captured["status"] == 200
            assert captured["principal"] == f"api_key:{key_id}"
            assert captured["timings_ms"]["total"] > 0
            [attempt] = captured["attempts"]
            assert attempt["deployment"] == "d1"
            assert attempt["status"] == 200
            assert attempt["retry_of"] is None
            assert captured["request_headers"]["authorization"] == "[redacted]"
            assert captured["request_headers"]["content-type"] == "application/json"
            # Neither the key's secret nor the prompt is anywhere in what was captured.
            assert key.split("_")[2] not in detail.text
            assert PROMPT not in detail.text

            retried = await client.get(f"/admin/v1/requests/{failed.headers['x-request-id']}")
            captured = retried.json()["debug_records"][0]["detail"]
            assert captured["error"] == {
                "source": "upstream", "code": "upstream_http_503", "type": captured["error"]["type"]
            }  # fmt: skip
            attempts = captured["attempts"]
            assert [a["status"] for a in attempts] == [503, 503, 503]
            assert [a["number"] for a in attempts] == [1, 2, 3]
            assert [a["retry_of"] for a in attempts] == [
                None,
                "upstream_http_503",
                "upstream_http_503",
            ]
            assert all(a["error_code"] == "upstream_http_503" for a in attempts)

            for response in (late, other):  # metered, not captured
                answer = await client.get(f"/admin/v1/requests/{response.headers['x-request-id']}")
                assert len(answer.json()["usage_records"]) == 1
                assert answer.json()["debug_records"] == []

            sessions = await client.get(f"{t.base_a}/api_keys/{key_id}/debug")
            [listed] = sessions.json()["data"]
            assert (listed["captured"], listed["remaining"], listed["is_active"]) == (2, 0, False)
            stopped = await client.delete(f"{t.base_a}/api_keys/{key_id}/debug")
            assert stopped.json()["data"] == []  # nothing left to stop

        [entry] = await audit_entries(admin, t.a, "api_key.debug_start")
        assert entry["after"]["requested"] == 2
        assert entry["actor"].startswith("api_key:")

        request_id = ok.headers["x-request-id"]
        async with admin.client(viewer) as client:  # usage.read, not api_key.read
            seen = (await client.get(f"/admin/v1/requests/{request_id}")).json()
            assert len(seen["usage_records"]) == 1
            assert seen["debug_records"] == []
            refused = await client.post(f"{t.base_a}/api_keys/{key_id}/debug", json={})
            assert_error(refused, 403, "permission_denied")
        async with admin.client(b_admin) as client:  # another tenant
            assert_error(await client.get(f"/admin/v1/requests/{request_id}"), 404, "not_found")
            elsewhere = await client.post(f"{t.base_a}/api_keys/{key_id}/debug", json={})
            assert_error(elsewhere, 404, "not_found")
        async with admin.client(t.a_admin) as client:
            missing = await client.get("/admin/v1/requests/no-such-request")
            assert_error(missing, 404, "not_found")


async def test_stopping_a_session_ends_capture_at_once(
    database_url: str | None, tmp_path: Path, sim: SimServer
) -> None:
    async with worker(database_url, tmp_path, sim) as w:
        admin, services = w.admin, w.admin.services
        t = await two_tenants(admin)
        _, key = await services.actions.create_api_key(
            SYSTEM, organization_id=t.a, project_id=t.pa, name="traced"
        )
        key_id = key.split("_")[1]
        async with admin.client(t.a_admin) as client:
            await client.post(f"{t.base_a}/api_keys/{key_id}/debug", json={"requests": 50})
            await traced(services, key_id)
            stopped = await client.delete(f"{t.base_a}/api_keys/{key_id}/debug")
            assert [s["remaining"] for s in stopped.json()["data"]] == [50]
            debugger = services.request_debug
            assert debugger is not None
            deadline = time.monotonic() + 5
            while debugger.traced:  # the stop reaches the data plane through the bus
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            response = await w.chat(key)
            await settled(services)
            answer = await client.get(f"/admin/v1/requests/{response.headers['x-request-id']}")
        body: dict[str, Any] = answer.json()
        assert body["debug_records"] == []
        [entry] = await audit_entries(admin, t.a, "api_key.debug_stop")
        assert entry["before"]["sessions"][0]["remaining"] == 50
