"""Budgets through the admin API, and a spent ``reject`` budget refusing /v1 requests
(one worker's services serve both, as ``lockgate serve`` does; SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from lockgate.admission.admitter import LimitAdmitter
from lockgate.config import GatewaySpec, resolve
from lockgate.controlplane.actions import SYSTEM
from lockgate.metering.budgets import BudgetAction, Period
from lockgate.metering.budgets_evaluator import BudgetEvaluator
from lockgate.metering.budgets_gate import BudgetGate
from lockgate.serve import Gateway
from lockgate.sim import SimServer
from lockgate.tenancy.model import Role
from tests.controlplane.conftest import Admin, started_admin
from tests.controlplane.conftest import database_url as database_url  # the fixture, here too
from tests.controlplane.tenants import assert_error, audit_entries, two_tenants
from tests.metering.budget_support import spend
from tests.support import chat_as

CHAT = b'{"model":"sim-chat","messages":[{"role":"user","content":"hi"}],"max_tokens":2}'


@dataclass
class Stack:
    admin: Admin
    gateway: Gateway
    gate: BudgetGate

    async def call(self, key: str) -> tuple[int, dict[str, str], dict[str, object]]:
        return await chat_as(self.gateway.port, key, CHAT)


@pytest.fixture
async def stack(database_url: str | None, tmp_path: Path, sim: SimServer) -> AsyncIterator[Stack]:
    async with started_admin(database_url, tmp_path) as admin:
        services = admin.services
        model = {"name": "sim-chat", "deployments": [{"name": "d", "base_url": sim.base_url}]}
        config = resolve(GatewaySpec.model_validate({"server": {"port": 0}, "models": [model]}))
        gateway = Gateway(
            config,
            authenticator=services.authenticator,
            authorizer=services.authorizer,
            admitter=services.admitter,
        )
        await gateway.start()
        assert isinstance(services.admitter, LimitAdmitter)
        try:
            yield Stack(admin, gateway, BudgetGate(services.store, services.admitter))
        finally:
            await gateway.stop(drain_timeout_s=1)


async def test_a_spent_reject_budget_refuses_requests_until_it_is_raised(stack: Stack) -> None:
    admin = stack.admin
    t = await two_tenants(admin)
    store = admin.services.store
    _, key = await admin.services.actions.create_api_key(
        SYSTEM, organization_id=t.a, project_id=t.pa, name="caller"
    )
    async with admin.client(t.a_admin) as client:
        created = await client.post(
            f"{t.base_a}/budgets",
            json={"project_id": t.pa, "period": "day", "amount": "2.5", "action": "reject"},
        )
        assert created.status_code == 201, created.text
        budget = created.json()
        assert budget["amount"] == "2.500000"
        assert budget["thresholds"] == [50, 80, 100]
        assert budget["status"]["spent"] == "0.000000"
        assert (await stack.call(key))[0] == 200
        now = datetime.now(UTC)
        await spend(store, t.a, t.pa, 2_500_000, now)  # the whole amount, as the ledger saw it
        await BudgetEvaluator(store).run_once()
        await stack.gate.refresh()
        status, headers, body = await stack.call(key)
        assert status == 429
        error = body["error"]
        assert isinstance(error, dict)
        assert error["code"] == "budget_exceeded"
        assert error["type"] == "insufficient_quota"
        assert "project's daily budget (2.500000 USD) is spent" in str(error["message"])
        assert int(headers["retry-after"]) >= 1
        read = await client.get(f"{t.base_a}/budgets/{budget['id']}")
        status_now = read.json()["status"]
        assert status_now["is_exhausted"] is True
        assert status_now["is_enforced"] is True
        assert status_now["thresholds_crossed"] == [50, 80, 100]
        assert status_now["percent"] == 100.0
        # Another project of the organisation is not capped by this project's budget.
        other_project = await admin.services.actions.create_project(SYSTEM, t.a, "other")
        _, other_key = await admin.services.actions.create_api_key(
            SYSTEM, organization_id=t.a, project_id=other_project.id, name="other"
        )
        assert (await stack.call(other_key))[0] == 200
        # Raising the amount lets the project through again (after the next refresh).
        raised = await client.patch(f"{t.base_a}/budgets/{budget['id']}", json={"amount": "5"})
        assert raised.status_code == 200, raised.text
        await stack.gate.refresh()
        assert (await stack.call(key))[0] == 200
        # An alert-only budget never refuses, however spent.
        await client.patch(
            f"{t.base_a}/budgets/{budget['id']}", json={"amount": "1", "action": "alert_only"}
        )
        await BudgetEvaluator(store).run_once()
        await stack.gate.refresh()
        assert (await stack.call(key))[0] == 200
    entries = await audit_entries(admin, t.a, "budget.update")
    assert entries[0]["after"] == {"amount": "1.000000", "action": "alert_only"}


async def test_an_organisation_budget_caps_all_its_projects(stack: Stack) -> None:
    admin = stack.admin
    t = await two_tenants(admin)
    store = admin.services.store
    _, key = await admin.services.actions.create_api_key(
        SYSTEM, organization_id=t.a, project_id=t.pa, name="caller"
    )
    async with admin.client(t.superadmin) as client:
        created = await client.post(
            f"{t.base_a}/budgets",
            json={"period": "month", "amount": "1", "action": "reject", "thresholds": [100]},
        )
        assert created.status_code == 201, created.text
    await spend(store, t.a, None, 1_000_000, datetime.now(UTC))  # spent outside any project
    await BudgetEvaluator(store).run_once()
    await stack.gate.refresh()
    status, _, body = await stack.call(key)
    assert status == 429
    assert "organization's monthly budget (1.000000 USD)" in str(body["error"])


async def test_budget_endpoints_stay_within_the_tenant_and_the_role(stack: Stack) -> None:
    admin = stack.admin
    t = await two_tenants(admin)
    b_budget = await admin.services.actions.create_budget(
        SYSTEM,
        t.b,
        project_id=None,
        period=Period.MONTH,
        amount=Decimal(10),
        currency="USD",
        thresholds=[100],
        action=BudgetAction.REJECT,
    )
    project_admin = await admin.service_key(t.a, t.pa, Role.PROJECT_ADMIN, role_project=t.pa)
    async with admin.client(t.a_admin) as client:
        for method, path in (
            ("GET", f"{t.base_b}/budgets"),
            ("GET", f"{t.base_b}/budgets/{b_budget.id}"),
            ("GET", f"{t.base_a}/budgets/{b_budget.id}"),
            ("PATCH", f"{t.base_a}/budgets/{b_budget.id}"),
            ("DELETE", f"{t.base_a}/budgets/{b_budget.id}"),
            ("DELETE", f"{t.base_b}/budgets/{b_budget.id}"),
        ):
            answer = await client.request(
                method, path, json={"amount": "1"} if method == "PATCH" else None
            )
            assert_error(answer, 404, "not_found")
        wrong_org_project = await client.post(
            f"{t.base_a}/budgets", json={"project_id": t.pb, "period": "day", "amount": "1"}
        )
        assert_error(wrong_org_project, 404, "not_found")
        for bad in (
            {"period": "week", "amount": "1"},
            {"period": "day", "amount": "0"},
            {"period": "day", "amount": "-1"},
            {"period": "day", "amount": "1", "thresholds": [80, 80]},
            {"period": "day", "amount": "1", "thresholds": [0]},
            {"period": "day", "amount": "1", "action": "block"},
            {"period": "day", "amount": "1", "currency": "usd"},
            {"period": "day", "amount": "1", "colour": "red"},
        ):
            assert_error(
                await client.post(f"{t.base_a}/budgets", json=bad), 400, "invalid_parameter"
            )
        first = await client.post(f"{t.base_a}/budgets", json={"period": "day", "amount": "1"})
        assert first.status_code == 201
        assert_error(
            await client.post(f"{t.base_a}/budgets", json={"period": "day", "amount": "2"}),
            409,
            "conflict",
        )
        listed = await client.get(f"{t.base_a}/budgets")
        assert [b["id"] for b in listed.json()["data"]] == [first.json()["id"]]
    async with admin.client(project_admin) as client:
        # A project admin reads its project's budgets but may not lift or set them.
        readable = await client.get(f"{t.base_a}/budgets", params={"project_id": t.pa})
        assert readable.status_code == 200, readable.text
        refused = await client.post(
            f"{t.base_a}/budgets", json={"project_id": t.pa, "period": "day", "amount": "1"}
        )
        assert_error(refused, 403, "permission_denied")
        assert_error(await client.get(f"{t.base_a}/budgets"), 403, "permission_denied")
    async with admin.client(t.a_admin) as client:
        deleted = await client.delete(f"{t.base_a}/budgets/{first.json()['id']}")
        assert deleted.status_code == 200
    assert (await audit_entries(admin, t.a, "budget.delete"))[0]["before"]["amount"] == "1.000000"
