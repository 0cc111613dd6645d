"""OpenTelemetry traces for the data plane: one worker's tracer, from begin to export.

Off by default, and then free: ``Tracing.from_spec`` returns ``None``, the
data plane never sets ``RequestContext.trace``, and every hook in the pipeline
is one ``is not None`` test; OpenTelemetry is not even imported.

On, per request:

1. ``begin`` (data plane, on arrival): the caller's ``traceparent`` /
   ``tracestate`` are honoured (their trace, their sampling decision), else a
   new trace id is drawn and sampled by ratio (the SDK's parent-based
   ``TraceIdRatioBased`` rule, so replicas agree on a trace).
2. ``RequestTrace.begin_attempt`` (forward stage): each upstream attempt gets a
   span id, sent to the engine in ``traceparent``.
3. ``settle`` (a settler, after the response): sampled requests become a span
   tree (``tracing_spans``) handed to the SDK's ``BatchSpanProcessor``, whose
   thread encodes and exports batches off the event loop.

Each worker builds its own ``Tracing`` after the fork (threads do not survive
one) and ``close``s it after draining, which exports what is queued.
"""

from __future__ import annotations

import logging
from random import getrandbits

from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

import lockgate
from lockgate.config.spec import TracingSpec
from lockgate.dataplane.context import RequestContext
from lockgate.observability.tracing_context import RequestTrace, parse_traceparent
from lockgate.observability.tracing_export import build_exporter
from lockgate.observability.tracing_spans import SpanBuilder

log = logging.getLogger(__name__)

_LOW_64_BITS = (1 << 64) - 1
INSTRUMENTATION_NAME = "lockgate"


class Tracing:
    """One worker's tracing: trace contexts per request, spans per sampled request.

    ``processor`` receives finished spans (normally a ``BatchSpanProcessor``);
    ``provider`` is the worker's ``TracerProvider``, sharing the resource and the
    processor, for any code that wants to make spans of its own through the API.
    """

    def __init__(
        self,
        processor: SpanProcessor,
        *,
        service_name: str = "lockgate",
        sampling_ratio: float = 1.0,
    ) -> None:
        self._processor = processor
        resource = Resource.create({SERVICE_NAME: service_name})
        self._bound = TraceIdRatioBased.get_bound_for_rate(sampling_ratio)
        self.provider = TracerProvider(
            resource=resource,
            sampler=ParentBased(TraceIdRatioBased(sampling_ratio)),
            shutdown_on_exit=False,
        )
        self.provider.add_span_processor(processor)
        scope = InstrumentationScope(INSTRUMENTATION_NAME, lockgate.__version__)
        self._builder = SpanBuilder(resource, scope)

    @classmethod
    def from_spec(cls, spec: TracingSpec, exporter: SpanExporter | None = None) -> Tracing | None:
        """The worker's tracing, or ``None`` when it is off. ``exporter`` overrides the
        configured one (tests). Raises ``ValueError`` for a header secret that is missing."""
        if not spec.enabled:
            return None
        batch = spec.batch
        processor = BatchSpanProcessor(
            exporter if exporter is not None else build_exporter(spec),
            max_queue_size=batch.max_queue_size,
            max_export_batch_size=batch.max_export_batch_size,
            schedule_delay_millis=batch.schedule_delay_ms,
            export_timeout_millis=batch.export_timeout_ms,
        )
        return cls(processor, service_name=spec.service_name, sampling_ratio=spec.sampling_ratio)

    # -- per request -------------------------------------------------------------------
    def begin(self, headers: dict[bytes, bytes]) -> RequestTrace:
        """The trace context of a request that just arrived (``headers`` lower-cased)."""
        traceparent = headers.get(b"traceparent")
        if traceparent is not None:
            parent = parse_traceparent(traceparent, headers.get(b"tracestate"))
            if parent is not None:
                trace_id, parent_span_id, is_sampled, tracestate = parent
                return RequestTrace(trace_id, parent_span_id, is_sampled, tracestate)
        trace_id = getrandbits(128) or 1
        return RequestTrace(trace_id, None, (trace_id & _LOW_64_BITS) < self._bound, None)

    def settle(self, ctx: RequestContext) -> None:
        """A settler: export the request's spans if it was sampled."""
        trace = ctx.trace
        if trace is None or not trace.is_sampled:
            return
        on_end = self._processor.on_end
        for span in self._builder.build(ctx, trace):
            on_end(span)

    # -- lifecycle ---------------------------------------------------------------------
    def force_flush(self, timeout_s: float = 10.0) -> bool:
        """Export everything queued now; False if that did not finish in time."""
        return self._processor.force_flush(int(timeout_s * 1000))

    def close(self) -> None:
        """After draining: export what is queued (bounded by the export timeout), then stop."""
        try:
            self.provider.shutdown()
        except Exception:  # a failing exporter must not stop the worker's shutdown
            log.exception("tracing: shutting down the span exporter failed")
