"""What a debug session captures of one request: everything but its content.

``request_detail(ctx)`` runs at settle time, and only for requests of a key
under a debug session, so it may take a few microseconds. It records the
request's identity, route, outcome, timings (the same figures as the access
log and ``Server-Timing``), each upstream attempt (deployment, status, timing,
the failure it retried) and the request's headers with credentials
removed.

Never captured: request or response bodies (prompts, completions, embeddings),
error *messages* (an upstream's message may quote the prompt), and the value
of any header that may carry a credential. Other header values still go
through ``app_log.redact``, the same safety net the application log uses.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from typing import Any

from lockgate.dataplane.context import RequestContext
from lockgate.observability.app_log import redact
from lockgate.observability.timings import request_timings

REDACTED = "[redacted]"
# Header names that carry or may carry a credential: the value is never kept.
_SECRET_HEADER = re.compile(
    rb"authorization|cookie|api[-_]?key|token|secret|passw|credential|session|signature|auth"
)
_MAX_HEADERS = 64
_MAX_HEADER_VALUE = 256
_API_KEY_PREFIX = "api_key:"


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


def _since(start: float, at: float | None) -> float | None:
    return None if at is None else round((at - start) * 1000.0, 3)


def safe_headers(headers: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """Header names to values, credentials replaced by ``[redacted]``; bounded in count
    and length (a debug record is not a place to store a 10 MB cookie)."""
    safe: dict[str, str] = {}
    for name, value in headers:
        if len(safe) >= _MAX_HEADERS:
            safe["…"] = "more headers not captured"
            break
        key = name.decode("latin-1").lower()
        if _SECRET_HEADER.search(name.lower()):
            safe[key] = REDACTED
            continue
        text = value.decode("latin-1")
        if len(text) > _MAX_HEADER_VALUE:
            text = text[:_MAX_HEADER_VALUE] + "…"
        safe[key] = redact(text)
    return safe


def limit_header_lines(raw: bytes) -> dict[str, str]:
    """The rate-limit header lines (``name: value\\r\\n``) the response carried."""
    pairs = []
    for line in raw.split(b"\r\n"):
        name, separator, value = line.partition(b":")
        if separator:
            pairs.append((name.strip(), value.strip()))
    return safe_headers(pairs)


def attempts(ctx: RequestContext) -> list[dict[str, Any]]:
    """The upstream attempts the request's trace recorded (empty when it reached none)."""
    trace = ctx.trace
    if trace is None:
        return []
    started = ctx.started_at
    found = []
    for attempt in trace.attempts:
        error = attempt.error
        reason = attempt.retry_reason
        ended = attempt.ended_at
        if ended is None and error is None:  # the attempt that answered: its body ended last
            ended = ctx.upstream_done_at or ctx.finished_at
        found.append(
            {
                "number": attempt.number,
                "deployment": attempt.deployment.name,
                "model": attempt.deployment.model_name,
                "started_ms": _since(started, attempt.started_at),
                "duration_ms": _ms(ended - attempt.started_at) if ended is not None else None,
                "status": attempt.status or None,
                "error_code": error.code if error is not None else None,
                "error_source": str(error.source) if error is not None else None,
                "is_cancelled": attempt.is_cancelled,  # abandoned: client left, a hedge won
                # Why this attempt was made: the previous attempt's failure (None: the first).
                "retry_of": reason.code if reason is not None else None,
                "upstream_headers": safe_headers(error.headers) if error is not None else None,
            }
        )
    return found


def request_detail(ctx: RequestContext, received_at: float | None = None) -> dict[str, Any]:
    """One request's debug detail as JSON-ready values. ``received_at``: its arrival as
    Unix time (default: derived from its duration and the clock now)."""
    total_s, gateway_s, upstream_s, ttft_s, tpot_s = request_timings(ctx)
    if received_at is None:
        received_at = time.time() - total_s
    principal = ctx.principal
    error = ctx.error
    usage = ctx.usage
    model = ctx.model
    deployment = ctx.deployment
    started = ctx.started_at
    trace = ctx.trace
    return {
        "request_id": ctx.request_id,
        "received_at": _iso(received_at),
        "principal": principal.id,
        "organization_id": principal.organization_id,
        "project_id": principal.project_id,
        "client_ip": ctx.client_ip,
        "method": ctx.http.method.decode("latin-1"),
        "path": ctx.http.path,
        "operation": str(ctx.operation.value),
        "requested_model": ctx.requested_model or None,
        "model": model.name if model is not None else None,
        "deployment": deployment.name if deployment is not None else None,
        "upstream_model": deployment.upstream_model if deployment is not None else None,
        "stream": ctx.is_stream,
        "status": ctx.status,
        "error": (
            {"source": str(error.source), "code": error.code, "type": error.type}
            if error is not None
            else None
        ),
        "client_disconnected": ctx.is_client_disconnected,
        "usage": (
            {
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "cached_tokens": usage.cached_tokens,
            }
            if usage is not None
            else None
        ),
        "timings_ms": {
            "total": _ms(total_s),
            "gateway": _ms(gateway_s),
            "upstream": _ms(upstream_s),
            "ttft": _ms(ttft_s),
            "time_per_output_token": _ms(tpot_s),
            "authenticated": _since(started, getattr(ctx, "authenticated_at", None)),
            "admitted": _since(started, getattr(ctx, "admitted_at", None)),
            "upstream_sent": _since(started, ctx.upstream_sent_at),
            "upstream_first_byte": _since(started, ctx.upstream_first_byte_at),
            "client_first_byte": _since(started, ctx.first_byte_to_client_at),
        },
        "trace_id": trace.trace_id if trace is not None else None,
        "attempts": attempts(ctx),
        "request_headers": safe_headers(ctx.http.headers.items()),
        "rate_limit_headers": limit_header_lines(ctx.limit_headers),
    }


def api_key_id(principal_id: str) -> str | None:
    """The key id of an ``api_key:<id>`` principal."""
    return (
        principal_id[len(_API_KEY_PREFIX) :] if principal_id.startswith(_API_KEY_PREFIX) else None
    )


def _iso(unix_s: float) -> str:
    seconds = int(unix_s)
    micros = int((unix_s - seconds) * 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{micros:06d}Z"
