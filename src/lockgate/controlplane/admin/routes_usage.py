"""Usage: aggregates, cursor-paged records, streamed exports; per organisation or deployment-wide.

Every route needs ``usage.read`` on the organisation (superadmins: on the
deployment, for the ``/admin/v1/usage`` routes). A caller bound to one project
must name it (``project_id``); another organisation's id is a 404, as
everywhere. Times are RFC 3339 with an offset; ranges are ``[from, to)``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from pydantic import AwareDatetime, BaseModel

from lockgate.controlplane.admin.deps import Caller, Services
from lockgate.metering.export import Subject, cost_in_units, export_row
from lockgate.metering.record import UsageRecord
from lockgate.metering.reporting import (
    MEDIA_TYPES,
    ExportFormat,
    RecordQuery,
    decode_cursor,
    encode,
    encode_cursor,
    fetch_page,
    pages,
)
from lockgate.store.columns import utc_now
from lockgate.store.repositories.usage import Dimension, Granularity, UsageBucket
from lockgate.tenancy.rbac import Permission

router = APIRouter(prefix="/admin/v1")
From = Annotated[AwareDatetime, Query(alias="from", description="start, inclusive (RFC 3339)")]
To = Annotated[AwareDatetime | None, Query(alias="to", description="end, exclusive (default: now)")]
GroupBy = Annotated[
    list[str],
    Query(description="organization, project, key, model, deployment; repeat or comma-separate"),
]
# A report is one row per bucket and group: bound the buckets, not the records.
MAX_BUCKETS = 10_000
_BUCKET_SPAN = {
    Granularity.HOUR: timedelta(hours=1),
    Granularity.DAY: timedelta(days=1),
    Granularity.MONTH: timedelta(days=28),
}


class UsageBucketOut(BaseModel):
    bucket_start: datetime
    organization_id: str | None
    project_id: str | None
    api_key_id: str | None
    model: str | None
    deployment: str | None
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    total_tokens: int
    cost_micros: int
    cost: str  # exact decimal text in currency units
    estimated_requests: int
    error_requests: int


class UsageReport(BaseModel):
    object: Literal["usage.report"] = "usage.report"
    bucket: Granularity
    group_by: list[Dimension]
    start: datetime
    end: datetime
    data: list[UsageBucketOut]


class UsageRecordPage(BaseModel):
    object: Literal["list"] = "list"
    data: list[dict[str, Any]]  # the export's fields (as in JSON lines)
    has_more: bool
    next_cursor: str | None  # pass as ``cursor`` for the next page


def _dimensions(values: Sequence[str]) -> list[Dimension]:
    names = [v.strip() for value in values for v in value.split(",") if v.strip()]
    try:
        return list(dict.fromkeys(Dimension(n) for n in names))
    except ValueError:
        allowed = ", ".join(d.value for d in Dimension)
        raise ValueError(f"group_by takes {allowed}") from None


def _range(start: datetime, end: datetime | None) -> tuple[datetime, datetime]:
    end = end or utc_now()
    if end <= start:
        raise ValueError("'to' must be after 'from'")
    return start, end


def _out(b: UsageBucket) -> UsageBucketOut:
    return UsageBucketOut(
        bucket_start=b.bucket_start,
        organization_id=b.organization_id,
        project_id=b.project_id,
        api_key_id=b.api_key_id,
        model=b.model,
        deployment=b.deployment,
        requests=b.requests,
        prompt_tokens=b.prompt_tokens,
        completion_tokens=b.completion_tokens,
        cached_tokens=b.cached_tokens,
        reasoning_tokens=b.reasoning_tokens,
        total_tokens=b.prompt_tokens + b.completion_tokens,
        cost_micros=b.cost_micros,
        cost=cost_in_units(b.cost_micros),
        estimated_requests=b.estimated_requests,
        error_requests=b.error_requests,
    )


async def _report(
    svc: Services,
    org_id: str | None,
    start: datetime,
    end: datetime | None,
    bucket: Granularity,
    group_by: Sequence[str],
    project_id: str | None,
    api_key_id: str | None,
    model: str | None,
) -> UsageReport:
    start, end = _range(start, end)
    if (end - start) / _BUCKET_SPAN[bucket] > MAX_BUCKETS:
        raise ValueError(f"more than {MAX_BUCKETS} {bucket.value} buckets: use a coarser bucket")
    dimensions = _dimensions(group_by)
    buckets = await svc.store.usage.aggregate(
        organization_id=org_id,
        start=start,
        end=end,
        granularity=bucket,
        group_by=dimensions,
        project_id=project_id,
        api_key_id=api_key_id,
        model=model,
    )
    return UsageReport(
        bucket=bucket,
        group_by=dimensions,
        start=start,
        end=end,
        data=[_out(b) for b in buckets],
    )


@router.get("/organizations/{org_id}/usage/aggregates")
async def organization_usage(
    org_id: str,
    caller: Caller,
    svc: Services,
    start: From,
    end: To = None,
    bucket: Granularity = Granularity.DAY,
    group_by: GroupBy = [],  # noqa: B006 - FastAPI copies it per request
    project_id: str | None = None,
    api_key_id: str | None = None,
    model: str | None = None,
) -> UsageReport:
    """Requests, tokens and cost per UTC bucket, broken down by ``group_by``."""
    caller.require(Permission.USAGE_READ, org_id, project_id)
    return await _report(svc, org_id, start, end, bucket, group_by, project_id, api_key_id, model)


@router.get("/usage/aggregates")
async def deployment_usage(
    caller: Caller,
    svc: Services,
    start: From,
    end: To = None,
    bucket: Granularity = Granularity.DAY,
    group_by: GroupBy = [],  # noqa: B006 - FastAPI copies it per request
    organization_id: str | None = None,
    project_id: str | None = None,
    api_key_id: str | None = None,
    model: str | None = None,
) -> UsageReport:
    """Across every organisation (superadmins); ``group_by=organization`` to compare them."""
    caller.require(Permission.USAGE_READ, None)
    return await _report(
        svc, organization_id, start, end, bucket, group_by, project_id, api_key_id, model
    )


async def _records(
    svc: Services, query: RecordQuery, limit: int, cursor: str | None
) -> UsageRecordPage:
    after = decode_cursor(cursor) if cursor else None
    found = await fetch_page(svc.store.usage, query, limit=limit + 1, after=after)
    page = found[:limit]
    more = len(found) > limit
    return UsageRecordPage(
        data=[export_row(r) for r in page],
        has_more=more,
        next_cursor=encode_cursor(page[-1]) if more else None,
    )


@router.get("/organizations/{org_id}/usage/records")
async def organization_records(
    org_id: str,
    caller: Caller,
    svc: Services,
    start: From,
    end: To = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: str | None = None,
    project_id: str | None = None,
    api_key_id: str | None = None,
    model: str | None = None,
) -> UsageRecordPage:
    """Records oldest first, ``limit`` at a time; follow ``next_cursor``."""
    caller.require(Permission.USAGE_READ, org_id, project_id)
    start, end = _range(start, end)
    query = RecordQuery(org_id, start, end, project_id, api_key_id, model)
    return await _records(svc, query, limit, cursor)


@router.get("/usage/records")
async def deployment_records(
    caller: Caller,
    svc: Services,
    start: From,
    end: To = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: str | None = None,
    organization_id: str | None = None,
    model: str | None = None,
) -> UsageRecordPage:
    caller.require(Permission.USAGE_READ, None)
    start, end = _range(start, end)
    query = RecordQuery(organization_id, start, end, model=model)
    return await _records(svc, query, limit, cursor)


async def _stream(
    svc: Services,
    query: RecordQuery,
    export_format: ExportFormat,
    source: str,
    subject: Subject,
) -> StreamingResponse:
    """The first page is read before the response starts, so a store that cannot be
    read is an error response (503), not a cut-off stream. A failure later can only
    cut the stream: the CSV or JSON lines then end early, without a final newline."""
    iterator = pages(svc.store.usage, query)
    first = await anext(iterator, None)

    async def batches() -> AsyncIterator[Sequence[UsageRecord]]:
        if first is not None:
            yield first
            async for batch in iterator:
                yield batch

    body = encode(batches(), export_format, source=source, subject=subject)
    extension = {"csv": "csv", "jsonl": "jsonl", "cloudevents": "cloudevents.jsonl"}
    name = f"usage.{extension[export_format.value]}"
    return StreamingResponse(
        body,
        media_type=MEDIA_TYPES[export_format],
        headers={"content-disposition": f'attachment; filename="{name}"'},
    )


@router.get("/organizations/{org_id}/usage/export")
async def organization_export(
    org_id: str,
    caller: Caller,
    svc: Services,
    start: From,
    end: To = None,
    format: ExportFormat = ExportFormat.CSV,
    project_id: str | None = None,
    api_key_id: str | None = None,
    model: str | None = None,
    source: Annotated[str, Query(min_length=1, max_length=200)] = "//lockgate",
    subject: Subject = Subject.ORGANIZATION,
) -> StreamingResponse:
    """Every record of the range, streamed: CSV, JSON lines, or CloudEvents (one
    structured-mode event per line, ids deterministic per record)."""
    caller.require(Permission.USAGE_READ, org_id, project_id)
    start, end = _range(start, end)
    query = RecordQuery(org_id, start, end, project_id, api_key_id, model)
    return await _stream(svc, query, format, source, subject)


@router.get("/usage/export")
async def deployment_export(
    caller: Caller,
    svc: Services,
    start: From,
    end: To = None,
    format: ExportFormat = ExportFormat.CSV,
    organization_id: str | None = None,
    source: Annotated[str, Query(min_length=1, max_length=200)] = "//lockgate",
    subject: Subject = Subject.ORGANIZATION,
) -> StreamingResponse:
    caller.require(Permission.USAGE_READ, None)
    start, end = _range(start, end)
    query = RecordQuery(organization_id, start, end)
    return await _stream(svc, query, format, source, subject)
