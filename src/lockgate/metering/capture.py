"""From a settled request to a usage record, in two steps at two very different costs.

``capture`` runs on the event loop once per request, so it does nothing but read
the context into a flat list of JSON values (about 0.6 µs): no pricing, no
datetimes, no objects. The journal stores these lists as they are.

``complete`` runs in the flusher, in batches: it turns a captured list into a
``UsageRecord`` — token counts checked, the estimate made when the upstream sent
no usage, latencies computed, the record priced at its own time.

Token counts: the upstream's ``usage`` when it sent one. When it sent none (a
stream cut short by the client or the upstream, an engine that reports no
usage) but the request reached it, the record is flagged ``is_estimated``, with
the prompt estimated as admission does (request body bytes / 4, rounded up) and
completion tokens counted as the stream's events that carried output to the
client (the engines we front send about one token per event); a whole answer
without usage gets 0. A request that never reached an upstream used no tokens,
exactly (not an estimate).

The captured layout is positional (``CAPTURED``); journals written with one
layout must stay readable, so change it only by appending fields, and have
``complete`` accept the shorter lists (``_V1_FIELDS``: before ``output_events``).
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import Any, Final

from lockgate.dataplane.context import RequestContext
from lockgate.metering.pricing import PriceCatalogue
from lockgate.metering.record import UsageRecord

BYTES_PER_TOKEN: Final = 4  # as admission.estimate: one token is about four bytes of text
# A model name the gateway does not know is the client's text: kept, but not all of it.
MAX_MODEL_CHARS: Final = 256
# More tokens than any request has: a count above it is an upstream's nonsense, and
# would overflow the store's 64-bit integers once priced.
MAX_TOKENS: Final = 10**12
_API_KEY_PREFIX: Final = "api_key:"

CAPTURED: Final = (
    "request_id",
    "settled_at_s",  # wall clock (time.time()) when settled
    "started_at",  # the rest of the times are event-loop seconds, as in RequestContext
    "upstream_sent_at",
    "first_event_at",  # first event relayed to the client, else the upstream's first byte
    "finished_at",
    "principal",
    "organization_id",
    "project_id",
    "operation",
    "model",
    "deployment",
    "upstream_model",
    "prompt_tokens",  # the four counts: None when the upstream sent no usage
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "request_bytes",
    "status",
    "error_code",
    "error_source",
    "is_stream",
    "is_client_disconnected",
    "output_events",  # appended in layout 2; journals of layout 1 lack it
)
_V1_FIELDS: Final = len(CAPTURED) - 1


def capture(ctx: RequestContext) -> list[Any]:
    """The settled request as a flat list laid out as ``CAPTURED`` (on the event loop)."""
    model = ctx.model
    deployment = ctx.deployment
    usage = ctx.usage
    error = ctx.error
    principal = ctx.principal
    return [
        ctx.request_id,
        time.time(),
        ctx.started_at,
        ctx.upstream_sent_at,
        ctx.first_byte_to_client_at or ctx.upstream_first_byte_at,
        ctx.finished_at,
        principal.id,
        principal.organization_id,
        principal.project_id,
        ctx.operation.value,
        ctx.requested_model if model is None else model.name,
        None if deployment is None else deployment.name,
        None if deployment is None else deployment.upstream_model,
        None if usage is None else usage.prompt_tokens,
        None if usage is None else usage.completion_tokens,
        None if usage is None else usage.cached_tokens,
        None if usage is None else usage.reasoning_tokens,
        len(ctx.http.body),
        ctx.status,
        None if error is None else error.code,
        None if error is None else error.source,  # a StrEnum: JSON text
        ctx.is_stream,
        ctx.is_client_disconnected,
        ctx.output_events,
    ]


def _count(value: object) -> int:
    """A token count as an upstream reported it, as an int in [0, MAX_TOKENS] (upstreams
    have sent floats, negatives and nulls; the ledger stores none of them)."""
    if type(value) is int and 0 <= value <= MAX_TOKENS:  # the usual case, first
        return value
    if isinstance(value, bool):
        return 0
    if isinstance(value, float) and math.isfinite(value):
        value = int(value)
    if isinstance(value, int):
        return min(max(value, 0), MAX_TOKENS)
    return 0


def _ms(start: float | None, end: float | None) -> float | None:
    if start is None or end is None:
        return None
    return round(max(end - start, 0.0) * 1000.0, 3)


def complete(record_id: str, captured: list[Any], catalogue: PriceCatalogue) -> UsageRecord:
    """The usage record of a captured request. Raises ``ValueError`` (or ``TypeError``)
    if ``captured`` is not a list laid out as ``CAPTURED``."""
    if len(captured) == _V1_FIELDS:  # journalled by a gateway before layout 2
        captured = [*captured, 0]
    if len(captured) != len(CAPTURED):
        raise ValueError(f"a captured request has {len(CAPTURED)} fields, not {len(captured)}")
    (
        request_id, settled_at_s, started_at, sent_at, first_event_at, finished_at,
        principal, organization_id, project_id, operation, model, deployment, upstream_model,
        prompt, completion, cached, reasoning, request_bytes, status, error_code, error_source,
        is_stream, is_client_disconnected, output_events,
    ) = captured  # fmt: skip
    if len(model) > MAX_MODEL_CHARS:
        model = model[:MAX_MODEL_CHARS]
    if "\x00" in model:  # PostgreSQL text cannot hold NUL; store the same on both backends
        model = model.replace("\x00", "\ufffd")
    total_ms = _ms(started_at, finished_at)
    # Whole microseconds, so that the price lookup and the stored time agree exactly
    # (fromtimestamp of us / 10^6 gives back the same microsecond: see pricing.epoch_us).
    occurred_us = round((float(settled_at_s) - (total_ms or 0.0) / 1000.0) * 1_000_000)
    occurred_at = datetime.fromtimestamp(occurred_us / 1_000_000, UTC)
    reached_upstream = sent_at is not None
    is_estimated = prompt is None and reached_upstream
    if prompt is None:
        prompt_tokens = -(-int(request_bytes) // BYTES_PER_TOKEN) if reached_upstream else 0
        completion_tokens = _count(output_events) if reached_upstream else 0
        cached_tokens = reasoning_tokens = 0
    else:
        prompt_tokens, completion_tokens = _count(prompt), _count(completion)
        cached_tokens, reasoning_tokens = _count(cached), _count(reasoning)
        if cached_tokens > prompt_tokens:  # part of the prompt, whatever the upstream says
            cached_tokens = prompt_tokens
        if reasoning_tokens > completion_tokens:
            reasoning_tokens = completion_tokens
    price_id, currency, cost_micros = catalogue.quote_us(
        model, deployment, occurred_us, prompt_tokens, completion_tokens, cached_tokens,
        reached_upstream,
    )  # fmt: skip
    # The values were JSON-encoded by ``capture``, so their types are known already;
    # only the token counts (the upstream's numbers) are checked.
    return UsageRecord(
        record_id,
        request_id,
        occurred_at,
        organization_id,
        project_id,
        principal[len(_API_KEY_PREFIX) :] if principal.startswith(_API_KEY_PREFIX) else None,
        principal,
        operation,
        model,
        upstream_model,
        deployment,
        prompt_tokens,
        completion_tokens,
        cached_tokens,
        reasoning_tokens,
        is_estimated,
        status,
        error_code,
        error_source,
        # TTFT as observability/timings.py defines it: streams only, upstream sent → first event.
        _ms(sent_at, first_event_at) if is_stream else None,
        total_ms,
        is_stream,
        is_client_disconnected,
        price_id,
        currency,
        cost_micros,
    )
