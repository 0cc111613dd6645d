"""Our OTLP encoder says exactly what the SDK's says, parsed back by opentelemetry-proto."""

from __future__ import annotations

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from lockgate.observability.tracing_encode import SpanEncoder

TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
SAMPLED = TraceFlags(TraceFlags.SAMPLED)
RESOURCE = Resource.create({"service.name": "lockgate", "service.instance.id": "w0"})
OTHER_RESOURCE = Resource({"service.name": "other"}, schema_url="https://example.com/schema")
SCOPE = InstrumentationScope("lockgate", "0.1.0")
OTHER_SCOPE = InstrumentationScope("x", None, "https://example.com/s", {"k": "v"})


def span(
    name: str = "chat m",
    *,
    span_id: int = 0x1234,
    parent: SpanContext | None = None,
    attributes: dict[str, object] | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    status: Status | None = None,
    state: TraceState | None = None,
    resource: Resource = RESOURCE,
    scope: InstrumentationScope | None = SCOPE,
    events: tuple[Event, ...] = (),
) -> ReadableSpan:
    return ReadableSpan(
        name,
        SpanContext(TRACE_ID, span_id, False, SAMPLED, state),
        parent,
        resource,
        attributes or {},  # type: ignore[arg-type]
        events=events,
        kind=kind,
        status=status or Status(StatusCode.UNSET),
        start_time=1_700_000_000_123_456_789,
        end_time=1_700_000_000_223_456_789,
        instrumentation_scope=scope,
    )


def assert_same(spans: list[ReadableSpan]) -> None:
    ours = SpanEncoder().encode(spans)
    assert ours is not None
    theirs = encode_spans(spans).SerializeToString()
    assert ExportTraceServiceRequest.FromString(ours) == ExportTraceServiceRequest.FromString(
        theirs
    )


def test_every_attribute_type_status_kind_and_parent_encode_as_the_sdk_does() -> None:
    remote = SpanContext(TRACE_ID, 0xB7AD6B7169203331, True, SAMPLED)
    local = SpanContext(TRACE_ID, 0x99, False, SAMPLED)
    attributes = {
        "s": "text é ü",
        "empty": "",
        "t": True,
        "f": False,
        "i": 12,
        "zero": 0,
        "negative": -5,
        "big": 2**62,
        "d": 0.25,
        "strings": ("a", "b"),
        "ints": [1, 2, 3],
        "long": "x" * 300,
    }
    assert_same(
        [
            span(attributes=attributes, parent=remote, kind=SpanKind.SERVER),
            span("child", span_id=0x99 + 1, parent=local, kind=SpanKind.CLIENT),
            span("failed", status=Status(StatusCode.ERROR, "upstream_http_500")),
            span("ok", status=Status(StatusCode.OK)),
            span("state", state=TraceState([("vendor", "abc"), ("other", "1")])),
            span("", span_id=2**64 - 1),
        ]
    )


def test_spans_of_several_resources_and_scopes_are_grouped_as_the_sdk_does() -> None:
    assert_same(
        [
            span("a"),
            span("b", resource=OTHER_RESOURCE),
            span("c", scope=OTHER_SCOPE),
            span("d"),
            span("e", scope=None),
        ]
    )


def test_the_encoder_keeps_its_caches_per_instance_and_stays_correct_across_batches() -> None:
    encoder = SpanEncoder()
    first = encoder.encode([span(attributes={"k": 1})])
    second = encoder.encode([span(attributes={"k": 1})])
    assert first == second
    assert SpanEncoder().encode([span(attributes={"k": 1})]) == first


def test_spans_with_events_are_left_to_the_sdk_encoder() -> None:
    assert SpanEncoder().encode([span(), span(events=(Event("e", {"a": 1}, 5),))]) is None
