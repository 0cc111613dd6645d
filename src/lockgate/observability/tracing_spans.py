"""A settled request's span tree, built in one go from its context's timestamps.

Why at settle time, with explicit start and end times, rather than a context
manager around each stage: the stages already stamp the context (for
``Server-Timing``, metrics and the access log), so the pipeline stays free of
tracing code, and building finished ``ReadableSpan`` objects directly costs
about a tenth of the SDK tracer's ``start_span``/``end`` per span (measured:
~2 µs against ~25 µs; the SDK's span takes locks, consults the sampler, and
notifies processors twice). The attempt spans' ids were chosen when each
attempt started (``RequestTrace.begin_attempt``), so the ``traceparent`` the
engine received names the span exported here.

The tree::

    chat {model}                         SERVER  whole request, GenAI + lockgate.* attributes
    ├── authenticate                      INTERNAL
    ├── authorize                         INTERNAL  body parsed, model resolved, permissions
    ├── admit                             INTERNAL  limits, including the saturation queue
    ├── route                             INTERNAL  until the first attempt is sent
    ├── chat {upstream model}             CLIENT    one per upstream attempt (retries, fallbacks)
    └── relay                             INTERNAL  from the winning answer's head to the end

A stage that was never reached has no span; the stage that failed carries the
error. Times are loop seconds, turned into Unix nanoseconds with one offset per
request (the loop clock is ``CLOCK_MONOTONIC``, as is ``time.monotonic``).
"""

from __future__ import annotations

import re
import time
from random import getrandbits
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from lockgate.dataplane.context import RequestContext
from lockgate.errors import GatewayError
from lockgate.observability.tracing_context import Attempt, RequestTrace
from lockgate.operations import Operation

# The GenAI operation names (gen_ai.operation.name); passthrough has none.
_GEN_AI_OPERATIONS = {
    Operation.CHAT: "chat",
    Operation.COMPLETIONS: "text_completion",
    Operation.EMBEDDINGS: "embeddings",
}
# Upstreams speak the OpenAI API: the GenAI conventions name that provider "openai"
# whatever hosts the model (server.address and the model say which engine it was).
PROVIDER = "openai"
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@-]{0,127}", re.ASCII)
_ERROR_CODE = re.compile(r"[A-Za-z0-9_.:-]{1,64}", re.ASCII)
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_OK = Status(StatusCode.UNSET)
_INTERNAL = SpanKind.INTERNAL


def outcome(ctx: RequestContext) -> tuple[str, str] | None:
    """(error source, error code) of a settled request, ``None`` for a success.

    The same attribution as the metrics and the access log: a disconnect is the
    client's, a request that ended with neither answer nor error a gateway crash.
    """
    error = ctx.error
    if error is not None:
        return error.source.value, _bounded_code(error)
    if ctx.is_client_disconnected:
        return "client", "client_disconnected"
    if ctx.status == 0:
        return "gateway", "internal_error"
    return None


def _bounded_code(error: GatewayError) -> str:
    """An upstream's own code that is not a plain word becomes "other" (bounded values)."""
    return error.code if _ERROR_CODE.fullmatch(error.code) else "other"


class SpanBuilder:
    """Turns settled requests into spans for one worker's resource and scope."""

    __slots__ = ("_resource", "_scope")

    def __init__(self, resource: Resource, scope: InstrumentationScope) -> None:
        self._resource = resource
        self._scope = scope

    def build(self, ctx: RequestContext, trace: RequestTrace) -> list[ReadableSpan]:
        """The request's spans, server span last (as a tracer would end them)."""
        offset_ns = time.time_ns() - time.monotonic_ns()
        finished = ctx.finished_at if ctx.finished_at is not None else ctx.started_at
        failure = outcome(ctx)
        state = TraceState.from_header([trace.tracestate.decode()]) if trace.tracestate else None
        server = SpanContext(trace.trace_id_int, trace.span_id, False, _SAMPLED, state)
        spans: list[ReadableSpan] = []
        add = spans.append

        def child(name: str, start: float, end: float, error: str | None = None) -> None:
            add(self._span(name, trace, state, server, start, end, offset_ns, error=error))

        # The pipeline's stages in order; each ends where the next begins.
        attempts = trace.attempts
        first_sent = attempts[0].started_at if attempts else None
        stages = (
            ("authenticate", ctx.started_at, ctx.authenticated_at),
            ("authorize", ctx.authenticated_at, ctx.admit_started_at),
            ("admit", ctx.admit_started_at, ctx.admitted_at),
            ("route", ctx.admitted_at, first_sent),
        )
        for name, start, end in stages:
            if start is None:
                break
            if end is None:  # the stage the request ended in
                child(name, start, finished, failure[1] if failure is not None else None)
                break
            child(name, start, end)
        for attempt in attempts:
            add(self._attempt(ctx, trace, state, server, attempt, finished, failure, offset_ns))
        answered = [a for a in attempts if a.status and a.error is None and not a.is_cancelled]
        if answered:  # forward returned: the relay ran from the winner's head to the end
            head = ctx.upstream_first_byte_at or answered[0].started_at
            child("relay", head, finished, failure[1] if failure is not None else None)
        add(self._server(ctx, trace, state, server, finished, failure, offset_ns))
        return spans

    def _span(
        self,
        name: str,
        trace: RequestTrace,
        state: TraceState | None,
        parent: SpanContext | None,
        start: float,
        end: float,
        offset_ns: int,
        *,
        error: str | None = None,
        span_id: int = 0,
        kind: SpanKind = _INTERNAL,
        attributes: dict[str, Any] | None = None,
    ) -> ReadableSpan:
        context = SpanContext(
            trace.trace_id_int, span_id or getrandbits(64) or 1, False, _SAMPLED, state
        )
        return ReadableSpan(
            name,
            context,
            parent,
            self._resource,
            attributes if attributes is not None else {},
            kind=kind,
            status=_OK if error is None else Status(StatusCode.ERROR, error),
            start_time=offset_ns + int(start * 1e9),
            end_time=offset_ns + int(end * 1e9),
            instrumentation_scope=self._scope,
        )

    def _attempt(
        self,
        ctx: RequestContext,
        trace: RequestTrace,
        state: TraceState | None,
        server: SpanContext,
        attempt: Attempt,
        finished: float,
        failure: tuple[str, str] | None,
        offset_ns: int,
    ) -> ReadableSpan:
        deployment = attempt.deployment
        operation = _GEN_AI_OPERATIONS.get(ctx.operation)
        attributes: dict[str, Any] = {
            "server.address": deployment.host,
            "server.port": deployment.port,
            "lockgate.deployment": deployment.name,
            "lockgate.model": deployment.model_name,
            "lockgate.attempt": attempt.number,
        }
        if operation is not None:
            attributes["gen_ai.operation.name"] = operation
            attributes["gen_ai.provider.name"] = PROVIDER
            attributes["gen_ai.system"] = PROVIDER
            attributes["gen_ai.request.model"] = deployment.upstream_model
            name = f"{operation} {deployment.upstream_model}"
        else:
            name = f"POST {deployment.upstream_path(ctx.http.path)}"
        if attempt.retry_reason is not None:
            attributes["lockgate.retry_reason"] = _bounded_code(attempt.retry_reason)
        if attempt.status:
            attributes["http.response.status_code"] = attempt.status
        error: str | None = None
        end = attempt.ended_at
        if attempt.error is not None:
            error = _bounded_code(attempt.error)
        elif attempt.is_cancelled:  # a hedge that lost, or the client left while we waited
            attributes["lockgate.attempt.cancelled"] = True
            if ctx.is_client_disconnected:
                error = "client_disconnected"
        else:  # the winner: it lasts as long as its body
            end = ctx.upstream_done_at or finished
            # Its fault (a stream broken, stalled, garbled) or cut short by the client.
            if failure is not None and (failure[0] == "upstream" or failure[0] == "client"):
                error = failure[1]
            usage = ctx.usage
            if usage is not None:
                attributes["gen_ai.usage.input_tokens"] = usage.prompt_tokens
                attributes["gen_ai.usage.output_tokens"] = usage.completion_tokens
        if error is not None:
            attributes["error.type"] = error
        return self._span(
            name,
            trace,
            state,
            server,
            attempt.started_at,
            end if end is not None else finished,
            offset_ns,
            error=error,
            span_id=attempt.span_id,
            kind=SpanKind.CLIENT,
            attributes=attributes,
        )

    def _server(
        self,
        ctx: RequestContext,
        trace: RequestTrace,
        state: TraceState | None,
        server: SpanContext,
        finished: float,
        failure: tuple[str, str] | None,
        offset_ns: int,
    ) -> ReadableSpan:
        model = ctx.model
        principal = ctx.principal
        operation = _GEN_AI_OPERATIONS.get(ctx.operation)
        attributes: dict[str, Any] = {
            "http.request.method": "POST",
            "http.route": ctx.http.path,
            "lockgate.request_id": ctx.request_id,
            "lockgate.principal": principal.id,
            "lockgate.stream": ctx.is_stream,
        }
        if operation is not None:
            attributes["gen_ai.operation.name"] = operation
            attributes["gen_ai.provider.name"] = PROVIDER
            attributes["gen_ai.system"] = PROVIDER
            name = f"{operation} {model.name}" if model is not None else operation
        else:
            name = f"POST {ctx.http.path}"
        requested = ctx.requested_model
        if requested and (model is not None or _MODEL_NAME.fullmatch(requested)):
            attributes["gen_ai.request.model"] = requested
        body = ctx.body
        if body is not None:
            max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
            if type(max_tokens) is int:
                attributes["gen_ai.request.max_tokens"] = max_tokens
        if principal.organization_id is not None:
            attributes["lockgate.organization_id"] = principal.organization_id
        if principal.project_id is not None:
            attributes["lockgate.project_id"] = principal.project_id
        if model is not None:
            attributes["lockgate.model"] = model.name
        deployment = ctx.deployment
        if deployment is not None:
            attributes["lockgate.deployment"] = deployment.name
            attributes["lockgate.attempts"] = len(trace.attempts)
        if ctx.status:
            attributes["http.response.status_code"] = ctx.status
            if ctx.status < 300 and model is not None:
                attributes["gen_ai.response.model"] = model.name  # what the client was told
        usage = ctx.usage
        if usage is not None:
            attributes["gen_ai.usage.input_tokens"] = usage.prompt_tokens
            attributes["gen_ai.usage.output_tokens"] = usage.completion_tokens
        sent = ctx.upstream_sent_at
        first = ctx.first_byte_to_client_at if ctx.is_stream else None
        if sent is not None and first is not None:
            attributes["lockgate.ttft_ms"] = (first - sent) * 1000.0
        error: str | None = None
        if failure is not None:
            source, error = failure
            attributes["error.type"] = error
            attributes["lockgate.error.source"] = source
            attributes["lockgate.error.code"] = error
        parent = None
        if trace.parent_span_id is not None:
            parent = SpanContext(
                trace.trace_id_int,
                trace.parent_span_id,
                True,
                _SAMPLED if trace.is_sampled else TraceFlags(0),
                state,
            )
        return self._span(
            name,
            trace,
            state,
            parent,
            ctx.started_at,
            finished,
            offset_ns,
            error=error,
            span_id=trace.span_id,
            kind=SpanKind.SERVER,
            attributes=attributes,
        )
