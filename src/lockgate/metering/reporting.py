"""Reading the ledger out: keyset cursors, paging a range, and streamed exports.

Shared by the admin API (``routes_usage``) and the operator commands
(``commands/usage``), so both page and encode the same way.

A cursor names the last record a page returned, ``(occurred_at, record_id)``:
the order ``UsageRecords.list`` pages in, which is stable (a record's time and
id never change) and total (the id breaks ties). It is opaque to clients:
base64url of a small JSON array, checked when decoded.

Exports are generated a page at a time (``PAGE_SIZE`` records), never built
whole in memory: a month of a large tenant is millions of records.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Final, Protocol

import orjson

from lockgate.metering.export import CSV_FIELDS, Subject, cloud_event, export_row
from lockgate.metering.record import UsageRecord

PAGE_SIZE: Final = 1000


class ExportFormat(StrEnum):
    CSV = "csv"
    JSONL = "jsonl"
    CLOUDEVENTS = "cloudevents"


MEDIA_TYPES: Final = {
    ExportFormat.CSV: "text/csv; charset=utf-8",
    ExportFormat.JSONL: "application/x-ndjson",
    # One structured-mode event per line (not the HTTP batch mode's one JSON array).
    ExportFormat.CLOUDEVENTS: "application/cloudevents+jsonl",
}


class RecordSource(Protocol):
    """``store.usage`` as far as reading goes."""

    async def list(
        self,
        *,
        organization_id: str | None,
        start: datetime,
        end: datetime,
        limit: int = 100,
        after: tuple[datetime, str] | None = None,
        project_id: str | None = None,
        api_key_id: str | None = None,
        model: str | None = None,
    ) -> Sequence[UsageRecord]: ...


@dataclass(frozen=True, slots=True)
class RecordQuery:
    """Which records: the tenant (None: deployment-wide), ``[start, end)``, and filters."""

    organization_id: str | None
    start: datetime
    end: datetime
    project_id: str | None = None
    api_key_id: str | None = None
    model: str | None = None


def encode_cursor(record: UsageRecord) -> str:
    raw = orjson.dumps([record.occurred_at.isoformat(timespec="microseconds"), record.record_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Raises ``ValueError`` for anything ``encode_cursor`` did not make."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, record_id = orjson.loads(raw)
        when = datetime.fromisoformat(at)
    except (binascii.Error, orjson.JSONDecodeError, TypeError, ValueError):
        raise ValueError("not a cursor this API returned") from None
    if not isinstance(record_id, str) or when.utcoffset() is None:
        raise ValueError("not a cursor this API returned")
    return when, record_id


async def fetch_page(
    source: RecordSource,
    query: RecordQuery,
    *,
    limit: int,
    after: tuple[datetime, str] | None = None,
) -> Sequence[UsageRecord]:
    return await source.list(
        organization_id=query.organization_id,
        start=query.start,
        end=query.end,
        limit=limit,
        after=after,
        project_id=query.project_id,
        api_key_id=query.api_key_id,
        model=query.model,
    )


async def pages(
    source: RecordSource, query: RecordQuery, *, page_size: int = PAGE_SIZE
) -> AsyncIterator[Sequence[UsageRecord]]:
    """Every record of the query, a page at a time, in cursor order."""
    after: tuple[datetime, str] | None = None
    while True:
        page = await fetch_page(source, query, limit=page_size, after=after)
        if page:
            yield page
        if len(page) < page_size:
            return
        after = (page[-1].occurred_at, page[-1].record_id)


async def encode(
    batches: AsyncIterator[Sequence[UsageRecord]],
    export_format: ExportFormat,
    *,
    source: str = "//lockgate",
    subject: Subject = Subject.ORGANIZATION,
) -> AsyncIterator[bytes]:
    """The export's bytes, one chunk per page (CSV starts with its header row)."""
    if export_format is ExportFormat.CSV:
        yield _csv_header()
    async for batch in batches:
        if export_format is ExportFormat.CSV:
            yield _csv_rows([export_row(r) for r in batch])
        elif export_format is ExportFormat.JSONL:
            yield b"".join(
                orjson.dumps(export_row(r), option=orjson.OPT_APPEND_NEWLINE) for r in batch
            )
        else:
            yield b"".join(
                orjson.dumps(
                    cloud_event(r, source=source, subject=subject),
                    option=orjson.OPT_APPEND_NEWLINE,
                )
                for r in batch
            )


def _csv_header() -> bytes:
    out = io.StringIO()
    csv.DictWriter(out, fieldnames=CSV_FIELDS, lineterminator="\r\n").writeheader()
    return out.getvalue().encode()


def _csv_rows(rows: list[dict[str, object]]) -> bytes:
    """As ``export.write_csv`` writes them: booleans ``true``/``false``, None empty."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, lineterminator="\r\n")
    for row in rows:
        writer.writerow(
            {
                name: ("true" if value else "false") if isinstance(value, bool) else value
                for name, value in row.items()
            }
        )
    return out.getvalue().encode()
