"""What tracing costs per request, by part. Not a test (pytest does not collect it).

The figures in docs/observability.md come from
``taskset -c 1 .venv/bin/python -m tests.observability.measure_tracing_costs``.
"""

from __future__ import annotations

import timeit
from collections.abc import Callable
from types import SimpleNamespace

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from lockgate.config import resolve
from lockgate.dataplane.context import Principal
from lockgate.observability.tracing import Tracing
from lockgate.observability.tracing_encode import SpanEncoder
from lockgate.observability.tracing_export import DiscardingExporter
from lockgate.usage import Usage
from tests.observability.support import context
from tests.support import gateway_spec, sim_model

TRACEPARENT = {b"traceparent": b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}


def per_call_us(fn: Callable[[], object], number: int = 20_000) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6


def main() -> None:
    model = resolve(gateway_spec([sim_model("m", "http://127.0.0.1:9")])).models[0]
    deployment = model.deployments[0]
    principal = Principal(
        id="api_key:abcdefghijklmnop", is_anonymous=False, organization_id="o", project_id="p"
    )
    http = SimpleNamespace(path="/v1/chat/completions", headers={})
    ctx = context(model=model, deployment=deployment, status=200, is_stream=True, http=http,
                  started_at=100.0, authenticated_at=100.00001, admit_started_at=100.00003,
                  admitted_at=100.00005, upstream_sent_at=100.0001, upstream_first_byte_at=100.002,
                  first_byte_to_client_at=100.03, upstream_done_at=101.0, finished_at=101.0002,
                  usage=Usage(10, 101, 111), requested_model="m", principal=principal,
                  body={"model": "m", "max_tokens": 100})  # fmt: skip
    processor = BatchSpanProcessor(DiscardingExporter(), max_queue_size=1_000_000)
    tracing = Tracing(processor)
    try:
        print(f"begin (new trace)               {per_call_us(lambda: tracing.begin({})):6.2f} µs")
        with_parent = per_call_us(lambda: tracing.begin(TRACEPARENT))
        print(f"begin (caller's traceparent)    {with_parent:6.2f} µs")
        trace = tracing.begin({})

        def attempt() -> None:
            trace.attempts.clear()
            trace.begin_attempt(deployment, 100.0001).answered(200)

        print(f"begin_attempt (+answered)       {per_call_us(attempt):6.2f} µs")
        ctx.trace = trace
        spans = tracing._builder.build(ctx, trace)
        print(f"spans per request               {len(spans):6d}")
        building = per_call_us(lambda: tracing._builder.build(ctx, trace))
        print(f"building them                   {building:6.2f} µs")
        print(f"settle (build + queue)          {per_call_us(lambda: tracing.settle(ctx)):6.2f} µs")
        batch = spans * 100
        encoder = SpanEncoder()
        ours = per_call_us(lambda: encoder.encode(batch), number=50) / 100
        theirs = per_call_us(lambda: encode_spans(batch).SerializeToString(), number=5) / 100
        print(f"OTLP encoding, ours             {ours:6.2f} µs per request")
        print(f"OTLP encoding, the SDK's        {theirs:6.2f} µs per request")
    finally:
        tracing.close()


if __name__ == "__main__":
    main()
