"""The admin API's usage routes: aggregates, cursor-paged records, streamed exports, tenancy."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from lockgate.metering.export import event_id
from lockgate.store.repositories.usage import Dimension, Granularity
from lockgate.tenancy.model import Role
from tests.controlplane.conftest import Admin, database_url, started_admin
from tests.controlplane.tenants import Tenants, assert_error, two_tenants
from tests.metering.support import record

__all__ = ["database_url"]  # the fixture, for pytest

T0 = datetime(2026, 3, 1, 10, 30, tzinfo=UTC)
RANGE = {"from": "2026-03-01T00:00:00Z", "to": "2026-04-01T00:00:00Z"}


@pytest.fixture
async def admin(
    database_url: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Admin]:
    monkeypatch.delenv("LOCKGATE_MASTER_KEYS", raising=False)
    async with started_admin(database_url, tmp_path) as started:
        yield started


async def _ledger(admin: Admin) -> Tenants:
    t = await two_tenants(admin)
    records = [
        record(
            f"a{i:03d}",
            at=T0 + timedelta(hours=7 * i),
            org=t.a,
            project=t.pa,
            key="key_1" if i % 3 else "key_2",
            model="llama" if i % 2 else "mistral",
            prompt=10 + i,
            completion=i,
            cost_micros=1_000 * i,
        )
        for i in range(60)
    ]
    records.append(record("b000", at=T0, org=t.b, project=t.pb, prompt=999))
    assert await admin.services.store.usage.insert_many(records) == 61
    return t


async def test_an_org_admin_reads_aggregates_of_their_own_organisation_only(admin: Admin) -> None:
    t = await _ledger(admin)
    async with admin.client(t.a_admin) as client:
        report = await client.get(
            f"{t.base_a}/usage/aggregates",
            params={**RANGE, "bucket": "day", "group_by": "model"},
        )
        assert report.status_code == 200, report.text
        body = report.json()
        assert body["bucket"] == "day"
        assert body["group_by"] == ["model"]
        expected = await admin.services.store.usage.aggregate(
            organization_id=t.a,
            start=datetime(2026, 3, 1, tzinfo=UTC),
            end=datetime(2026, 4, 1, tzinfo=UTC),
            granularity=Granularity.DAY,
            group_by=[Dimension.MODEL],
        )
        assert [(b["model"], b["requests"], b["prompt_tokens"]) for b in body["data"]] == [
            (b.model, b.requests, b.prompt_tokens) for b in expected
        ]
        assert sum(b["requests"] for b in body["data"]) == 60
        first = body["data"][0]
        assert first["total_tokens"] == first["prompt_tokens"] + first["completion_tokens"]
        assert first["cost"] == f"{first['cost_micros'] / 1e6:.6f}"
        # Another tenant's usage is not found; neither are bad parameters accepted.
        assert_error(
            await client.get(f"{t.base_b}/usage/aggregates", params=RANGE), 404, "not_found"
        )
        assert_error(
            await client.get(
                f"{t.base_a}/usage/aggregates", params={**RANGE, "group_by": "colour"}
            ),
            400,
            "invalid_parameter",
        )
        assert_error(
            await client.get(
                f"{t.base_a}/usage/aggregates",
                params={"from": "2026-03-01T00:00:00", "to": "2026-04-01T00:00:00Z"},
            ),
            400,
            "invalid_parameter",
        )
        assert_error(
            await client.get(
                f"{t.base_a}/usage/aggregates",
                params={
                    "from": "2000-01-01T00:00:00Z",
                    "to": "2030-01-01T00:00:00Z",
                    "bucket": "hour",
                },
            ),
            400,
            "invalid_parameter",
        )
        # Deployment-wide reports are the superadmin's.
        assert_error(
            await client.get("/admin/v1/usage/aggregates", params=RANGE), 403, "permission_denied"
        )
    async with admin.client(t.superadmin) as client:
        everyone = await client.get(
            "/admin/v1/usage/aggregates",
            params={**RANGE, "bucket": "month", "group_by": "organization"},
        )
        assert [(b["organization_id"], b["requests"]) for b in everyone.json()["data"]] == sorted(
            [(t.a, 60), (t.b, 1)]
        )


async def test_a_project_viewer_must_name_their_project(admin: Admin) -> None:
    t = await _ledger(admin)
    viewer = await admin.service_key(t.a, t.pa, Role.VIEWER, role_project=t.pa)
    async with admin.client(viewer) as client:
        assert_error(
            await client.get(f"{t.base_a}/usage/aggregates", params=RANGE), 403, "permission_denied"
        )
        mine = await client.get(
            f"{t.base_a}/usage/aggregates", params={**RANGE, "project_id": t.pa}
        )
        assert mine.status_code == 200, mine.text
        assert sum(b["requests"] for b in mine.json()["data"]) == 60


async def test_records_page_by_a_stable_cursor(admin: Admin) -> None:
    t = await _ledger(admin)
    seen: list[str] = []
    async with admin.client(t.a_admin) as client:
        params = {**RANGE, "limit": "7"}
        while True:
            page = await client.get(f"{t.base_a}/usage/records", params=params)
            assert page.status_code == 200, page.text
            body = page.json()
            seen += [r["record_id"] for r in body["data"]]
            if not body["has_more"]:
                assert body["next_cursor"] is None
                break
            params = {**RANGE, "limit": "7", "cursor": body["next_cursor"]}
        assert seen == [f"a{i:03d}" for i in range(60)]
        one_key = await client.get(
            f"{t.base_a}/usage/records", params={**RANGE, "api_key_id": "key_2", "limit": "500"}
        )
        assert len(one_key.json()["data"]) == 20
        assert_error(
            await client.get(
                f"{t.base_a}/usage/records", params={**RANGE, "cursor": "not-a-cursor"}
            ),
            400,
            "invalid_parameter",
        )


async def test_exports_stream_every_record_in_each_format(admin: Admin) -> None:
    t = await _ledger(admin)
    async with admin.client(t.a_admin) as client:
        url = f"{t.base_a}/usage/export"
        as_csv = await client.get(url, params={**RANGE, "format": "csv"})
        assert as_csv.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(as_csv.text)))
        assert [r["record_id"] for r in rows] == [f"a{i:03d}" for i in range(60)]
        assert rows[1]["cost"] == "0.001000"
        assert rows[1]["is_stream"] == "false"
        lines = (await client.get(url, params={**RANGE, "format": "jsonl"})).content.splitlines()
        assert [orjson.loads(line)["prompt_tokens"] for line in lines] == [
            10 + i for i in range(60)
        ]
        events = (await client.get(url, params={**RANGE, "format": "cloudevents"})).content
        parsed = [orjson.loads(line) for line in events.splitlines()]
        assert [e["id"] for e in parsed] == [event_id(f"a{i:03d}") for i in range(60)]
        assert {e["subject"] for e in parsed} == {t.a}
        assert_error(await client.get(f"{t.base_b}/usage/export", params=RANGE), 404, "not_found")
