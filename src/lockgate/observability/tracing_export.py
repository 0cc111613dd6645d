"""Where spans go: the OTLP exporters (HTTP, gRPC), the console, or nowhere.

Built once per worker from ``observability.tracing``. Secrets in ``headers``
are read here, at start-up, so a missing one stops the worker with its name
(never its value). The exporters run in the ``BatchSpanProcessor``'s thread,
never on the event loop.
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from lockgate.config.runtime import read_secret
from lockgate.config.spec import TracingSpec

DEFAULT_HTTP_ENDPOINT = "http://localhost:4318/v1/traces"
DEFAULT_GRPC_ENDPOINT = "http://localhost:4317"


class DiscardingExporter(SpanExporter):
    """Exporter ``none``: spans are built and batched, then dropped (measures their cost)."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def export_headers(spec: TracingSpec) -> dict[str, str]:
    """The configured headers with secret references read; raises ValueError naming one."""
    headers: dict[str, str] = {}
    for name, value in spec.headers.items():
        if isinstance(value, str):
            headers[name] = value
            continue
        try:
            headers[name] = read_secret(value)
        except ValueError as exc:
            raise ValueError(f"observability.tracing.headers.{name}: {exc}") from None
    return headers


def build_exporter(spec: TracingSpec) -> SpanExporter:
    """The exporter ``spec`` names (its module is imported only when chosen)."""
    if spec.exporter == "none":
        return DiscardingExporter()
    if spec.exporter == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter(service_name=spec.service_name)
    headers = export_headers(spec)
    if spec.exporter == "otlp_http":
        from lockgate.observability.tracing_otlp import FastHttpSpanExporter

        return FastHttpSpanExporter(
            endpoint=spec.endpoint or DEFAULT_HTTP_ENDPOINT,
            headers=headers,
            timeout=spec.timeout_s,
            is_gzip=spec.compression == "gzip",
        )
    from lockgate.observability.tracing_otlp import FastGrpcSpanExporter

    endpoint = spec.endpoint or DEFAULT_GRPC_ENDPOINT
    return FastGrpcSpanExporter(
        endpoint=endpoint,
        insecure=endpoint.startswith("http://"),
        # gRPC metadata keys are lower-case.
        headers={name.lower(): value for name, value in headers.items()},
        timeout=spec.timeout_s,
        is_gzip=spec.compression == "gzip",
    )
