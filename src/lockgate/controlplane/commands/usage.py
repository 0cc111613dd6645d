"""``lockgate usage report`` and ``lockgate usage export``: the ledger, from the host.

Like every operator command they read the store the gateway writes (the
operator on the host is trusted deployment-wide), through the same code as the
admin API: ``store.usage.aggregate`` (the roll-ups) for reports and
``metering.reporting`` for streamed exports, so a CLI export and an API export
of the same range are byte for byte the same.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

from lockgate.controlplane.commands.errors import UsageError
from lockgate.controlplane.commands.inputs import resolve_organization, resolve_project
from lockgate.controlplane.commands.output import Column
from lockgate.controlplane.commands.session import Session
from lockgate.metering.export import Subject, cost_in_units
from lockgate.metering.reporting import ExportFormat, RecordQuery, encode, pages
from lockgate.store.columns import utc_now
from lockgate.store.repositories.usage import Dimension, Granularity, UsageBucket

_DIMENSIONS = {
    "org": Dimension.ORGANIZATION,
    "organization": Dimension.ORGANIZATION,
    "project": Dimension.PROJECT,
    "key": Dimension.KEY,
    "model": Dimension.MODEL,
    "deployment": Dimension.DEPLOYMENT,
}
REPORT_COLUMNS = (
    Column("BUCKET", "bucket"),
    Column("GROUP", "group"),
    Column("REQUESTS", "requests"),
    Column("TOKENS IN", "prompt_tokens"),
    Column("TOKENS OUT", "completion_tokens"),
    Column("COST", "cost"),
)


def parse_time(text: str, option: str) -> datetime:
    """ISO 8601; without an offset, UTC (the ledger's zone)."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"{option} {text!r}: use ISO 8601, e.g. 2026-03-01T00:00:00Z") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def parse_dimensions(values: list[str]) -> list[Dimension]:
    names = [n.strip() for value in values for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in _DIMENSIONS]
    if unknown:
        raise UsageError(f"--group-by {unknown[0]!r}: use org, project, key, model or deployment")
    return list(dict.fromkeys(_DIMENSIONS[n] for n in names))


async def query_of(session: Session, args: argparse.Namespace) -> RecordQuery:
    """The tenant, range and filters the options name (org and project by id or name)."""
    start = parse_time(args.start, "--from")
    end = parse_time(args.end, "--to") if args.end else utc_now()
    if end <= start:
        raise UsageError("--to must be after --from")
    organization_id = project_id = None
    if args.org is not None:
        organization_id = (await resolve_organization(session.store, args.org)).id
    if args.project is not None:
        if organization_id is None:
            raise UsageError("--project needs --org")
        project_id = (await resolve_project(session.store, organization_id, args.project)).id
    return RecordQuery(organization_id, start, end, project_id, args.key, args.model)


def report_row(bucket: UsageBucket, dimensions: list[Dimension]) -> dict[str, Any]:
    values = {
        Dimension.ORGANIZATION: bucket.organization_id,
        Dimension.PROJECT: bucket.project_id,
        Dimension.KEY: bucket.api_key_id,
        Dimension.MODEL: bucket.model,
        Dimension.DEPLOYMENT: bucket.deployment,
    }
    return {
        "bucket": bucket.bucket_start.isoformat(),
        "group": "/".join(values[d] or "-" for d in dimensions) or "all",
        **{d.value: values[d] for d in dimensions},
        "requests": bucket.requests,
        "prompt_tokens": bucket.prompt_tokens,
        "completion_tokens": bucket.completion_tokens,
        "cached_tokens": bucket.cached_tokens,
        "reasoning_tokens": bucket.reasoning_tokens,
        "cost_micros": bucket.cost_micros,
        "cost": cost_in_units(bucket.cost_micros),
        "estimated_requests": bucket.estimated_requests,
        "error_requests": bucket.error_requests,
    }


async def report(session: Session, args: argparse.Namespace) -> int:
    query = await query_of(session, args)
    dimensions = parse_dimensions(args.group_by)
    buckets = await session.store.usage.aggregate(
        organization_id=query.organization_id,
        start=query.start,
        end=query.end,
        granularity=Granularity(args.bucket),
        group_by=dimensions,
        project_id=query.project_id,
        api_key_id=query.api_key_id,
        model=query.model,
    )
    session.out.records([report_row(b, dimensions) for b in buckets], REPORT_COLUMNS)
    return 0


async def export(session: Session, args: argparse.Namespace) -> int:
    query = await query_of(session, args)
    out = sys.stdout.buffer
    chunks = encode(
        pages(session.store.usage, query),
        ExportFormat(args.format),
        source=args.source,
        subject=Subject(args.subject),
    )
    async for chunk in chunks:
        out.write(chunk)
    out.flush()
    return 0
