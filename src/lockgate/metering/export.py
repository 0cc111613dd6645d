"""Exports of usage records: CSV, JSON lines, and CloudEvents for metering systems.

CSV and JSON lines carry every field of ``UsageRecord`` under its own name, the
cost both as integer micro-units (exact, for machines) and as a decimal string
in currency units (for people and spreadsheets; never a float).

CloudEvents (spec 1.0, structured JSON mode, as OpenMeter ingests them): one event
per record, ``type`` ``io.lockgate.usage.v1``. The event ``id`` is a UUIDv5 of
the record id under a fixed Lockgate namespace: the same record always yields
the same id, in any process and any version, so a consumer that receives an event
twice (a push retried, an export re-run) drops the copy. ``subject`` is the
billed party — the organisation by default (OpenMeter's "customer"), or the
project or key — and ``time`` the record's time.
"""

from __future__ import annotations

import csv
import uuid
from collections.abc import Iterable
from decimal import Decimal
from enum import StrEnum
from typing import IO, Any, Final

import orjson

from lockgate.metering.pricing import MICROS_PER_UNIT
from lockgate.metering.record import UsageRecord

CLOUDEVENTS_TYPE: Final = "io.lockgate.usage.v1"
# uuid5(NAMESPACE_URL, "https://lockgate.io/ns/usage-record"); never change it: event
# ids derive from it, and consumers deduplicate on them.
USAGE_EVENT_NAMESPACE: Final = uuid.UUID("b08275ad-b940-5fba-a81e-26301c2f45b0")

CSV_FIELDS: Final = (
    *UsageRecord._fields,
    "cost",
)


class Subject(StrEnum):
    """Which tenant a CloudEvent's ``subject`` names."""

    ORGANIZATION = "organization"
    PROJECT = "project"
    KEY = "key"


def cost_in_units(cost_micros: int) -> str:
    """Micro-units as an exact decimal string in currency units: 1234567 → "1.234567"."""
    return str((Decimal(cost_micros) / MICROS_PER_UNIT).quantize(Decimal("0.000001")))


def export_row(record: UsageRecord) -> dict[str, Any]:
    """One record for CSV and JSON lines: every field, plus ``cost`` in currency units."""
    row = record.to_json()
    row["cost"] = cost_in_units(record.cost_micros)
    return row


def write_csv(records: Iterable[UsageRecord], out: IO[str]) -> int:
    """Write a header and one row per record to ``out`` (open it with ``newline=""``).

    Empty optional fields are empty cells; booleans are ``true``/``false``.
    Returns the number of records written.
    """
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, lineterminator="\r\n")
    writer.writeheader()
    count = 0
    for record in records:
        row = export_row(record)
        writer.writerow(
            {
                name: ("true" if value else "false") if isinstance(value, bool) else value
                for name, value in row.items()
            }
        )
        count += 1
    return count


def write_jsonl(records: Iterable[UsageRecord], out: IO[bytes]) -> int:
    """One JSON object per line (UTF-8, ``\\n``-terminated); returns the count."""
    count = 0
    for record in records:
        out.write(orjson.dumps(export_row(record), option=orjson.OPT_APPEND_NEWLINE))
        count += 1
    return count


def event_id(record_id: str) -> str:
    """The CloudEvent id of a record: deterministic, stable, a valid UUID."""
    return str(uuid.uuid5(USAGE_EVENT_NAMESPACE, record_id))


def cloud_event(
    record: UsageRecord, *, source: str, subject: Subject = Subject.ORGANIZATION
) -> dict[str, Any]:
    """The record as a CloudEvents 1.0 JSON event.

    ``source`` is a URI reference naming this gateway deployment (for example
    ``//lockgate/prod-eu``). Requests without the subject's tenant (anonymous
    ones) get the subject ``anonymous``.
    """
    tenant = {
        Subject.ORGANIZATION: record.organization_id,
        Subject.PROJECT: record.project_id,
        Subject.KEY: record.api_key_id,
    }[subject]
    data = record.to_json()
    del data["occurred_at"]  # it is the event's ``time``
    data["total_tokens"] = record.total_tokens
    data["cost"] = cost_in_units(record.cost_micros)
    return {
        "specversion": "1.0",
        "id": event_id(record.record_id),
        "source": source,
        "type": CLOUDEVENTS_TYPE,
        "subject": tenant or "anonymous",
        "time": record.occurred_at.isoformat(timespec="microseconds").replace("+00:00", "Z"),
        "datacontenttype": "application/json",
        "data": data,
    }


def write_cloudevents(
    records: Iterable[UsageRecord],
    out: IO[bytes],
    *,
    source: str,
    subject: Subject = Subject.ORGANIZATION,
) -> int:
    """CloudEvents as JSON lines (one structured-mode event per line); returns the count.

    For an HTTP batch (``application/cloudevents-batch+json``), send
    ``[cloud_event(r, ...) for r in records]`` as one JSON array instead.
    """
    count = 0
    for record in records:
        event = cloud_event(record, source=source, subject=subject)
        out.write(orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE))
        count += 1
    return count
