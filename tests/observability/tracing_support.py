"""Helpers for the tracing tests: a real gateway whose spans land in memory, span-tree views."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from lockgate.config import GatewaySpec, resolve
from lockgate.dataplane.pipeline.settle import Settler, Settlers, UsageTotals
from lockgate.observability.tracing import Tracing
from lockgate.serve import Gateway
from lockgate.sim import SimServer
from tests.observability.support import settled


@dataclass
class TracedGateway:
    gateway: Gateway
    totals: UsageTotals
    exporter: InMemorySpanExporter
    tracing: Tracing

    @property
    def port(self) -> int:
        return self.gateway.port

    async def settled(self, count: int) -> list[ReadableSpan]:
        """Every span exported once ``count`` requests were settled."""
        await settled(self.totals, count)
        return list(self.exporter.get_finished_spans())


@asynccontextmanager
async def traced_gateway(
    spec: GatewaySpec,
    *settlers: Settler,
    sampling_ratio: float = 1.0,
    processor: SpanProcessor | None = None,
) -> AsyncIterator[TracedGateway]:
    """A real gateway on loopback with tracing on (and ``settlers`` after it); spans go
    to an in-memory exporter synchronously, so a settled request's are there at once."""
    exporter = InMemorySpanExporter()
    tracing = Tracing(processor or SimpleSpanProcessor(exporter), sampling_ratio=sampling_ratio)
    totals = UsageTotals()
    gateway = Gateway(resolve(spec), settler=Settlers(tracing, *settlers, totals))
    # The serve wiring passes it to DataPlane(tracing=...); tests build the Gateway directly.
    gateway.dataplane.tracing = tracing
    await gateway.start()
    try:
        yield TracedGateway(gateway, totals, exporter, tracing)
    finally:
        await gateway.stop(drain_timeout_s=1.0)
        tracing.close()


def by_name(spans: Sequence[ReadableSpan]) -> dict[str, list[ReadableSpan]]:
    out: dict[str, list[ReadableSpan]] = {}
    for span in spans:
        out.setdefault(span.name, []).append(span)
    return out


def one(spans: Sequence[ReadableSpan], name: str) -> ReadableSpan:
    found = by_name(spans).get(name, [])
    assert len(found) == 1, f"{len(found)} spans named {name!r} in {[s.name for s in spans]}"
    return found[0]


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def span_id(span: ReadableSpan) -> int:
    context = span.context
    assert context is not None
    return context.span_id


def trace_id(span: ReadableSpan) -> int:
    context = span.context
    assert context is not None
    return context.trace_id


def children_of(spans: Sequence[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    """``parent``'s children, in start order (ties: in the order they were exported)."""
    ordered = sorted(spans, key=lambda s: s.start_time or 0)
    return [s for s in ordered if s.parent is not None and s.parent.span_id == span_id(parent)]


def children(spans: Sequence[ReadableSpan], parent: ReadableSpan) -> list[str]:
    """Names of ``parent``'s children, in start order."""
    return [s.name for s in children_of(spans, parent)]


def upstream_headers(sim: SimServer) -> list[dict[str, str]]:
    """The headers of every request the simulator received, oldest first."""
    return [
        {k.decode("latin-1"): v.decode("latin-1") for k, v in headers.items()}
        for _, _, _, headers, _ in sim.app.recent
    ]
