"""Exports: CSV and JSON lines carry every field exactly; CloudEvents ids are deterministic."""

from __future__ import annotations

import csv
import io
import re
import uuid
from datetime import UTC, datetime

import orjson

from lockgate.metering.export import (
    CLOUDEVENTS_TYPE,
    CSV_FIELDS,
    Subject,
    cloud_event,
    cost_in_units,
    event_id,
    write_cloudevents,
    write_csv,
    write_jsonl,
)
from lockgate.metering.record import UsageRecord
from lockgate.store.schema import usage_records
from tests.metering.support import record

AT = datetime(2026, 3, 1, 12, 30, 15, 123_456, tzinfo=UTC)
RECORDS = [
    record("ur_0123456789abcdef_1", at=AT, cost_micros=1_234_567),
    record("ur_0123456789abcdef_2", at=AT, org=None, project=None, key=None, cost_micros=5),
]


def test_cost_is_exact_text_in_currency_units() -> None:
    assert [cost_in_units(c) for c in (0, 5, 1_234_567, 10**15 + 1)] == [
        "0.000000",
        "0.000005",
        "1.234567",
        "1000000000.000001",
    ]


def test_csv_has_every_field() -> None:
    out = io.StringIO(newline="")
    assert write_csv(RECORDS, out) == 2
    rows = list(csv.DictReader(io.StringIO(out.getvalue(), newline="")))
    assert tuple(rows[0]) == CSV_FIELDS
    assert rows[0]["record_id"] == "ur_0123456789abcdef_1"
    assert rows[0]["occurred_at"] == "2026-03-01T12:30:15.123456+00:00"
    assert (rows[0]["cost_micros"], rows[0]["cost"]) == ("1234567", "1.234567")
    assert (rows[0]["is_stream"], rows[1]["organization_id"]) == ("false", "")


def test_jsonl_round_trips_to_the_same_records() -> None:
    out = io.BytesIO()
    assert write_jsonl(RECORDS, out) == 2
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    parsed = [orjson.loads(line) for line in lines]
    assert [p.pop("cost") for p in parsed] == ["1.234567", "0.000005"]
    assert [UsageRecord.from_json(p) for p in parsed] == RECORDS


def test_a_record_has_the_ledger_table_s_columns_in_order() -> None:
    # The store inserts records as they are (repositories/usage.py): the orders must match.
    assert UsageRecord._fields == tuple(usage_records.c.keys())


def test_cloudevent_ids_are_deterministic_and_stable() -> None:
    first = cloud_event(RECORDS[0], source="//lockgate/test")
    again = cloud_event(RECORDS[0], source="//lockgate/elsewhere", subject=Subject.KEY)
    assert first["id"] == again["id"] == event_id("ur_0123456789abcdef_1")
    # Pinned: consumers deduplicate on these ids, so they must never change between versions.
    assert first["id"] == "943fd463-02ce-5b64-88f2-81aa06229ce2"
    assert uuid.UUID(first["id"]).version == 5
    assert event_id("ur_0123456789abcdef_2") != first["id"]


def test_cloudevents_are_spec_1_0_structured_json() -> None:
    event = cloud_event(RECORDS[0], source="//lockgate/test")
    assert {
        k: event[k] for k in ("specversion", "source", "type", "subject", "datacontenttype")
    } == {
        "specversion": "1.0",
        "source": "//lockgate/test",
        "type": CLOUDEVENTS_TYPE,
        "subject": "org_a",
        "datacontenttype": "application/json",
    }
    assert event["time"] == "2026-03-01T12:30:15.123456Z"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", event["time"])
    data = event["data"]
    assert (data["prompt_tokens"], data["completion_tokens"], data["total_tokens"]) == (10, 5, 15)
    assert (data["cost_micros"], data["cost"], data["record_id"]) == (
        1_234_567,
        "1.234567",
        "ur_0123456789abcdef_1",
    )
    assert cloud_event(RECORDS[0], source="s", subject=Subject.PROJECT)["subject"] == "prj_a"
    assert cloud_event(RECORDS[1], source="s")["subject"] == "anonymous"
    out = io.BytesIO()
    assert write_cloudevents(RECORDS, out, source="//lockgate/test") == 2
    assert [orjson.loads(line)["id"] for line in out.getvalue().splitlines()] == [
        event_id(r.record_id) for r in RECORDS
    ]
