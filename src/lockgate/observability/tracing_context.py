"""One request's trace context (W3C Trace Context) and what its upstream attempts did.

Created by ``Tracing.begin`` when a request enters the pipeline, and only when
tracing is on: ``RequestContext.trace`` is ``None`` otherwise, and every hook
in the pipeline is a single ``is not None`` test. Nothing here imports
OpenTelemetry: the spans themselves are built at settle time
(``tracing_spans.py``) from this record and the context's timestamps.

Every request with tracing on gets a trace id and a server span id, sampled or
not, so the trace id can reach the access log and the upstream (a downstream
service may still sample a trace we did not). Only sampled requests record
their attempts.
"""

from __future__ import annotations

import re
from random import getrandbits

from lockgate.config import DeploymentTarget
from lockgate.errors import GatewayError, UpstreamHttpError

# version "-" trace-id "-" parent-id "-" flags; a future version may append "-" fields.
_TRACEPARENT = re.compile(rb"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_ZERO_TRACE_ID = b"0" * 32
_ZERO_SPAN_ID = b"0" * 16
# W3C: at most 32 list members; longer headers may be dropped rather than propagated.
_MAX_TRACESTATE_BYTES = 512


class Attempt:
    """One upstream call: which deployment, when, and how it ended.

    ``header`` holds the trace header lines to send with it. ``ended_at`` stays
    ``None`` for the attempt that answered: it lasts as long as its body.
    """

    __slots__ = (
        "deployment",
        "ended_at",
        "error",
        "header",
        "is_cancelled",
        "number",
        "retry_reason",
        "span_id",
        "started_at",
        "status",
    )

    def __init__(
        self,
        span_id: int,
        deployment: DeploymentTarget,
        number: int,
        started_at: float,
        header: bytes,
        retry_reason: GatewayError | None,
    ) -> None:
        self.span_id = span_id
        self.deployment = deployment
        self.number = number  # 1-based, across the model, its fallbacks and hedges
        self.started_at = started_at
        self.header = header
        self.retry_reason = retry_reason  # the failure this attempt retries, if any
        self.ended_at: float | None = None
        self.status = 0  # the upstream's HTTP status; 0 if none arrived
        self.error: GatewayError | None = None
        self.is_cancelled = False

    def answered(self, status: int) -> None:
        """A success head arrived: the attempt lasts until its body ends."""
        self.status = status

    def failed(self, now: float, error: GatewayError) -> None:
        self.ended_at = now
        self.error = error
        # An upstream's error answer (its 401/403 already mapped to our 502); 0: no answer.
        self.status = error.status if isinstance(error, UpstreamHttpError) else 0

    def cancelled(self, now: float) -> None:
        """Abandoned before its head: the client left, or a hedge won elsewhere."""
        self.ended_at = now
        self.is_cancelled = True


class RequestTrace:
    """The trace ids of one request and, when sampled, its attempts.

    ``trace_id`` (32 lower-case hex digits) is what the access log shows;
    ``parent_span_id`` is the caller's span (``None``: we started the trace).
    """

    __slots__ = (
        "_flags",
        "attempts",
        "is_sampled",
        "parent_span_id",
        "span_id",
        "trace_id",
        "trace_id_int",
        "tracestate",
    )

    def __init__(
        self,
        trace_id: int,
        parent_span_id: int | None,
        is_sampled: bool,
        tracestate: bytes | None,
    ) -> None:
        self.trace_id_int = trace_id
        self.trace_id = "%032x" % trace_id  # noqa: UP031 - fastest form
        self.span_id = getrandbits(64) or 1
        self.parent_span_id = parent_span_id
        self.is_sampled = is_sampled
        self.tracestate = tracestate
        self.attempts: list[Attempt] = []
        self._flags = b"01" if is_sampled else b"00"

    def begin_attempt(self, deployment: DeploymentTarget, now: float) -> Attempt:
        """An upstream attempt starting now (recorded when sampled).

        Its ``traceparent`` names the attempt's (client) span as the parent, so the
        engine's own spans hang under the attempt that reached it.
        """
        span_id = getrandbits(64) or 1
        header = b"traceparent: 00-%s-%016x-%s\r\n" % (self.trace_id.encode(), span_id, self._flags)
        if self.tracestate is not None:
            header += b"tracestate: " + self.tracestate + b"\r\n"
        attempts = self.attempts
        reason = None
        for earlier in reversed(attempts):
            if earlier.error is not None:
                reason = earlier.error
                break
        attempt = Attempt(span_id, deployment, len(attempts) + 1, now, header, reason)
        if self.is_sampled:
            attempts.append(attempt)
        return attempt


def parse_traceparent(
    traceparent: bytes | None, tracestate: bytes | None
) -> tuple[int, int, bool, bytes | None] | None:
    """(trace id, parent span id, sampled, tracestate) from a caller's headers, if valid.

    Invalid or unknown-format values are ignored (W3C: start a new trace), and so
    is ``tracestate`` without a valid ``traceparent``.
    """
    if traceparent is None:
        return None
    match = _TRACEPARENT.fullmatch(traceparent.strip())
    if match is None:
        return None
    version, trace_id, parent_id, flags, rest = match.groups()
    if version == b"ff" or (version == b"00" and rest is not None):
        return None
    if trace_id == _ZERO_TRACE_ID or parent_id == _ZERO_SPAN_ID:
        return None
    state = tracestate.strip() if tracestate else None
    if not state or len(state) > _MAX_TRACESTATE_BYTES or b"\r" in state or b"\n" in state:
        state = None
    return int(trace_id, 16), int(parent_id, 16), bool(int(flags, 16) & 1), state
