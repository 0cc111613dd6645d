"""``lockgate usage report|export`` and ``lockgate prices add|list`` as an operator runs them."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from lockgate.controlplane.commands.errors import UsageError
from lockgate.controlplane.commands.usage import parse_dimensions, parse_time
from lockgate.metering.export import event_id
from lockgate.store import Store, upgrade
from lockgate.store.database import default_url
from lockgate.store.repositories.usage import Dimension
from tests.controlplane.conftest import deployment
from tests.controlplane.operator import Deployment
from tests.metering.support import record

__all__ = ["deployment"]  # the fixture, for pytest

T0 = datetime(2026, 3, 1, 10, tzinfo=UTC)
RANGE = "--from 2026-03-01 --to 2026-04-01T00:00:00+00:00"


async def _seed(deployment: Deployment) -> None:
    url = deployment.database_url or default_url(str(deployment.data_dir))
    await upgrade(url)  # as serve would have before any record was written
    store = await Store.open(url)
    try:
        org = await store.organizations.create(name="acme")
        await store.usage.insert_many(
            [
                record(
                    f"r{i:02d}",
                    at=T0 + timedelta(days=i),
                    org=org.id,
                    model="llama" if i % 2 else "mistral",
                    prompt=100,
                    completion=10 * i,
                    cost_micros=1_500_000,
                )
                for i in range(20)
            ]
        )
    finally:
        await store.close()


async def test_prices_are_added_with_the_admin_api_rules_and_listed(deployment: Deployment) -> None:
    starts = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    # A write command prepares the database (as serve would) and audits the change.
    added = await deployment.cli(
        f"prices add --model llama --effective-from {starts} --input 0.15 --output 0.60 --json"
    )
    price = added.one()
    assert (price["model"], price["input_per_million"], price["source"]) == (
        "llama",
        "0.15",
        "admin",
    )
    refused = await deployment.cli("prices add --model llama --effective-from 2020-01-01", expect=2)
    assert "never retroactive" in refused.err
    listed = await deployment.cli("prices list --json")
    assert [p["id"] for p in listed.lines()] == [price["id"]]


async def test_reports_and_exports(deployment: Deployment) -> None:
    await _seed(deployment)
    by_model = await deployment.cli(
        f"usage report {RANGE} --bucket month --group-by model --org acme --json"
    )
    assert [
        (r["model"], r["requests"], r["completion_tokens"], r["cost"]) for r in by_model.lines()
    ] == [
        ("llama", 10, sum(10 * i for i in range(1, 20, 2)), "15.000000"),
        ("mistral", 10, sum(10 * i for i in range(0, 20, 2)), "15.000000"),
    ]
    table = await deployment.cli(f"usage report {RANGE} --bucket month")
    header, row = table.out.splitlines()
    assert header.split() == [
        "BUCKET",
        "GROUP",
        "REQUESTS",
        "TOKENS",
        "IN",
        "TOKENS",
        "OUT",
        "COST",
    ]
    assert row.split()[1:] == ["all", "20", "2000", "1900", "30.000000"]
    exported = await deployment.cli(f"usage export {RANGE} --format csv --model llama")
    rows = list(csv.DictReader(io.StringIO(exported.out)))
    assert [r["record_id"] for r in rows] == [f"r{i:02d}" for i in range(1, 20, 2)]
    events = await deployment.cli(f"usage export {RANGE} --format cloudevents --source //test")
    ids = [orjson.loads(line)["id"] for line in events.out.splitlines()]
    assert ids == [event_id(f"r{i:02d}") for i in range(20)]


def test_bad_input_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="--group-by 'colour'"):
        parse_dimensions(["model,colour"])
    assert parse_dimensions(["org,model", "model"]) == [Dimension.ORGANIZATION, Dimension.MODEL]
    with pytest.raises(UsageError, match="--from"):
        parse_time("yesterday", "--from")
    assert parse_time("2026-03-01", "--from") == datetime(2026, 3, 1, tzinfo=UTC)
