"""``lockgate inspect REQUEST_ID`` and ``lockgate keys debug|undebug``.

``inspect`` prints everything the store knows about one request: its usage
record (tenant, model and deployment, tokens, cost, status and who is to
blame for an error, timings) and, when a debug session captured it, each
upstream attempt (deployment, status, timing, the failure it retried) and
the request's headers without credentials. As every operator command, it
reads the store directly: whoever can read the config is the operator and
sees every tenant. (The admin API's ``GET /admin/v1/requests/{id}`` is the
tenant-scoped way.) The usage record appears once the ledger has flushed it,
normally within a second of the request ending.

``keys debug`` starts a debug session for a key (the next N requests, for at
most ``--ttl``), ``keys undebug`` ends it; both are audited as ``cli:<user>``
and reach running gateways through the bus, as the admin API's do.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from lockgate.controlplane.actions.request_debug import RequestDebugActions
from lockgate.controlplane.commands.errors import EXIT_FAILED, UsageError
from lockgate.controlplane.commands.inputs import parse_duration, parse_key_id, resolve_organization
from lockgate.controlplane.commands.output import Column
from lockgate.controlplane.commands.session import Session
from lockgate.metering.record import UsageRecord
from lockgate.observability.debug_model import MAX_DEBUG_REQUESTS, MAX_DEBUG_TTL_S, DebugRecord
from lockgate.store.columns import utc_now
from lockgate.store.repositories.request_debug import request_debug

SESSION_FIELDS = (
    Column("session", "id"),
    Column("key", "api_key_id"),
    Column("requests", "requested"),
    Column("remaining", "remaining"),
    Column("expires", "expires_at"),
)


async def inspect(session: Session, args: argparse.Namespace) -> int:
    request_id = args.request_id.strip()
    repository = request_debug(session.store)
    usage = await repository.usage_for_request(request_id)
    debug = await repository.records_for_request(request_id)
    out = session.out
    if out.is_json:
        out.json_line(
            {
                "request_id": request_id,
                "usage_records": [record.to_json() for record in usage],
                "debug_records": [record.to_json() for record in debug],
            }
        )
    else:
        for record in usage:
            _print_usage(session, record)
        for captured in debug:
            _print_debug(session, captured)
    if not usage and not debug:
        out.text(
            f"no record of request {request_id!r} (the ledger flushes within seconds of a "
            "request's end; metering may be off; or the id is not one the gateway issued)"
        )
        return EXIT_FAILED
    return 0


def _print_usage(session: Session, record: UsageRecord) -> None:
    error = f"{record.error_source}/{record.error_code}" if record.error_code else "-"
    cost = f"{record.cost_micros / 1_000_000:.6f} {record.currency}" if record.currency else "-"
    lines = {
        "request": record.request_id,
        "time": record.occurred_at.isoformat(timespec="milliseconds"),
        "tenant": f"{record.organization_id or '-'} / {record.project_id or '-'}",
        "principal": record.principal,
        "operation": f"{record.operation}{' (stream)' if record.is_stream else ''}",
        "model": f"{record.model} -> {record.deployment or '-'} ({record.upstream_model or '-'})",
        "status": f"{record.status}"
        + (" (client disconnected)" if record.is_client_disconnected else ""),
        "error": error,
        "tokens": f"{record.prompt_tokens} in ({record.cached_tokens} cached), "
        f"{record.completion_tokens} out ({record.reasoning_tokens} reasoning)"
        f"{' estimated' if record.is_estimated else ''}",
        "cost": cost,
        "timings": f"total {_ms(record.total_ms)}, ttft {_ms(record.ttft_ms)}",
    }
    _block(session, "usage record", lines)


def _print_debug(session: Session, record: DebugRecord) -> None:
    detail = record.detail
    timings = detail.get("timings_ms") or {}
    lines = {
        "session": record.session_id,
        "received": detail.get("received_at"),
        "route": f"{detail.get('method')} {detail.get('path')} -> {detail.get('model') or '-'}"
        f" / {detail.get('deployment') or '-'}",
        "status": detail.get("status"),
        "error": _error(detail.get("error")),
        "trace": detail.get("trace_id") or "-",
        "timings": ", ".join(f"{name} {_ms(value)}" for name, value in timings.items() if value),
    }
    _block(session, "debug detail", lines)
    for attempt in detail.get("attempts") or []:
        outcome = attempt.get("error_code") or (
            "cancelled" if attempt.get("is_cancelled") else "ok"
        )
        session.out.text(
            f"  attempt {attempt.get('number')}: {attempt.get('deployment')} "
            f"status {attempt.get('status') or '-'} {outcome}, "
            f"at {_ms(attempt.get('started_ms'))} for {_ms(attempt.get('duration_ms'))}"
            + (f", retrying {attempt['retry_of']}" if attempt.get("retry_of") else "")
        )
    headers = detail.get("request_headers") or {}
    if headers:
        session.out.text("  request headers:")
        for name, value in headers.items():
            session.out.text(f"    {name}: {value}")


def _block(session: Session, title: str, lines: Mapping[str, Any]) -> None:
    session.out.text(f"{title}:")
    width = max(len(name) for name in lines)
    for name, value in lines.items():
        session.out.text(f"  {name:<{width}}  {value if value is not None else '-'}")


def _error(error: Any) -> str:
    if not isinstance(error, dict):
        return "-"
    return f"{error.get('source')}/{error.get('code')}"


def _ms(value: Any) -> str:
    return "-" if value is None else f"{float(value):.3f} ms"


async def start_debug(session: Session, args: argparse.Namespace) -> int:
    if not 1 <= args.requests <= MAX_DEBUG_REQUESTS:
        raise UsageError(f"--requests must be between 1 and {MAX_DEBUG_REQUESTS}")
    ttl = parse_duration(args.ttl, "--ttl")
    if ttl.total_seconds() > MAX_DEBUG_TTL_S:
        raise UsageError(f"--ttl {args.ttl!r}: at most {MAX_DEBUG_TTL_S // 3600}h")
    org = await resolve_organization(session.store, args.org)
    writer = session.write_access()
    actions = RequestDebugActions(session.store, writer.bus)
    debug = await actions.start(
        session.actor,
        organization_id=org.id,
        key_id=parse_key_id(args.key_id),
        requests=args.requests,
        ttl_s=ttl.total_seconds(),
    )
    record = debug.to_json(utc_now())
    session.out.record(record, SESSION_FIELDS)
    return 0


async def stop_debug(session: Session, args: argparse.Namespace) -> int:
    org = await resolve_organization(session.store, args.org)
    writer = session.write_access()
    actions = RequestDebugActions(session.store, writer.bus)
    stopped = await actions.stop(
        session.actor, organization_id=org.id, key_id=parse_key_id(args.key_id)
    )
    now = utc_now()
    session.out.records([s.to_json(now) for s in stopped], SESSION_FIELDS)
    if not stopped:
        session.out.text("the key had no active debug session")
    return 0
