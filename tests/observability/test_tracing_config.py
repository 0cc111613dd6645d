"""``observability.tracing``: validated, off by default, and when off never loads OpenTelemetry."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.semconv.attributes import error_attributes, http_attributes, server_attributes

from lockgate.config import ConfigError, parse_config, resolve
from lockgate.config.spec import SecretRef, TracingSpec
from lockgate.dataplane.pipeline.admit import AdmitAll
from lockgate.observability.telemetry import Telemetry
from lockgate.observability.tracing import Tracing
from lockgate.observability.tracing_context import parse_traceparent
from lockgate.observability.tracing_export import (
    DEFAULT_GRPC_ENDPOINT,
    DEFAULT_HTTP_ENDPOINT,
    DiscardingExporter,
    build_exporter,
)
from lockgate.observability.tracing_otlp import FastGrpcSpanExporter, FastHttpSpanExporter
from lockgate.operations import Operation
from lockgate.providers.openai_compat import RequestTemplate

FULL = """\
observability:
  tracing:
    enabled: true
    exporter: otlp_grpc
    endpoint: https://collector.example.com:4317
    headers:
      x-honeycomb-team: {env: HONEYCOMB_KEY}
      x-static: plain
    compression: gzip
    timeout_s: 5
    sampling_ratio: 0.25
    service_name: lockgate-eu
    batch: {max_queue_size: 4096, max_export_batch_size: 256, schedule_delay_ms: 500,
            export_timeout_ms: 3000}
"""


def test_off_by_default() -> None:
    spec = parse_config("").observability.tracing
    assert spec == TracingSpec()
    assert spec.enabled is False
    assert Tracing.from_spec(spec) is None


def test_every_setting_is_read() -> None:
    spec = parse_config(FULL).observability.tracing
    assert spec.exporter == "otlp_grpc"
    assert spec.headers == {"x-honeycomb-team": SecretRef(env="HONEYCOMB_KEY"), "x-static": "plain"}
    assert (spec.compression, spec.timeout_s, spec.sampling_ratio) == ("gzip", 5, 0.25)
    assert spec.service_name == "lockgate-eu"
    assert spec.batch.max_export_batch_size == 256


@pytest.mark.parametrize(
    ("setting", "problem"),
    [
        ("exporter: zipkin", "exporter"),
        ("sampling_ratio: 1.5", "sampling_ratio"),
        ("sampling_ratio: -0.1", "sampling_ratio"),
        ("endpoint: collector:4318", "endpoint"),
        ("endpoint: http://c:4318/v1/traces?x=1", "endpoint"),
        ("unknown_key: 1", "unknown_key"),
        ("batch: {max_queue_size: 10, max_export_batch_size: 20}", "max_export_batch_size"),
        ("batch: {schedule_delay: 5}", "schedule_delay"),
        ("headers: {'bad header': x}", "not a header name"),
        ("headers: {x-key: {env: A, file: B}}", "exactly one"),
        ("service_name: ''", "service_name"),
    ],
)
def test_bad_settings_are_refused_with_their_place(setting: str, problem: str) -> None:
    text = "observability:\n  tracing:\n" + textwrap.indent(setting, "    ") + "\n"
    with pytest.raises(ConfigError, match=problem):
        parse_config(text)


def test_each_exporter_is_built_from_its_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCKGATE_TEST_TOKEN", "t0ken")
    http = build_exporter(
        TracingSpec(enabled=True, headers={"a": SecretRef(env="LOCKGATE_TEST_TOKEN")})
    )
    assert isinstance(http, FastHttpSpanExporter)
    assert http._endpoint == DEFAULT_HTTP_ENDPOINT
    grpc_exporter = build_exporter(TracingSpec(enabled=True, exporter="otlp_grpc"))
    assert isinstance(grpc_exporter, FastGrpcSpanExporter)
    assert DEFAULT_GRPC_ENDPOINT.endswith(":4317")
    grpc_exporter.shutdown()
    http.shutdown()
    assert isinstance(
        build_exporter(TracingSpec(enabled=True, exporter="none")), DiscardingExporter
    )


def test_the_worker_telemetry_adds_the_span_settler_only_when_on() -> None:
    off = Telemetry.build(resolve(parse_config("")), AdmitAll())
    assert off.tracing is None
    on_config = "observability:\n  tracing: {enabled: true, exporter: none}\n"
    on = Telemetry.build(resolve(parse_config(on_config)), AdmitAll())
    try:
        assert on.tracing is not None
        assert on.settlers[-1] is on.tracing
    finally:
        on.close()


def test_tracing_off_never_imports_opentelemetry() -> None:
    """Off costs nothing: the serving path (config, services, data plane) loads no OTel."""
    code = textwrap.dedent(
        """
        import sys
        from lockgate.config import parse_config, resolve
        from lockgate.dataplane.app import DataPlane
        from lockgate.dataplane.pipeline.admit import AdmitAll
        from lockgate.observability.telemetry import Telemetry
        import lockgate.serve
        telemetry = Telemetry.build(resolve(parse_config("")), AdmitAll())
        loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
        assert telemetry.tracing is None and not loaded, loaded
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_attribute_names_are_the_semantic_conventions() -> None:
    """Our string constants, checked against the conventions package (not imported at run time)."""
    names = {
        gen_ai.GEN_AI_OPERATION_NAME: "gen_ai.operation.name",
        gen_ai.GEN_AI_PROVIDER_NAME: "gen_ai.provider.name",
        gen_ai.GEN_AI_SYSTEM: "gen_ai.system",
        gen_ai.GEN_AI_REQUEST_MODEL: "gen_ai.request.model",
        gen_ai.GEN_AI_RESPONSE_MODEL: "gen_ai.response.model",
        gen_ai.GEN_AI_REQUEST_MAX_TOKENS: "gen_ai.request.max_tokens",
        gen_ai.GEN_AI_USAGE_INPUT_TOKENS: "gen_ai.usage.input_tokens",
        gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS: "gen_ai.usage.output_tokens",
        error_attributes.ERROR_TYPE: "error.type",
        server_attributes.SERVER_ADDRESS: "server.address",
        server_attributes.SERVER_PORT: "server.port",
        http_attributes.HTTP_RESPONSE_STATUS_CODE: "http.response.status_code",
        http_attributes.HTTP_ROUTE: "http.route",
        http_attributes.HTTP_REQUEST_METHOD: "http.request.method",
    }
    assert all(ours == theirs for theirs, ours in names.items())
    values = gen_ai.GenAiOperationNameValues
    assert (values.CHAT.value, values.TEXT_COMPLETION.value, values.EMBEDDINGS.value) == (
        "chat",
        "text_completion",
        "embeddings",
    )


def test_traceparent_parsing() -> None:
    good = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert parse_traceparent(good, b" a=1 ") == (
        0x0AF7651916CD43DD8448EB211C80319C,
        0xB7AD6B7169203331,
        True,
        b"a=1",
    )
    assert parse_traceparent(good.replace(b"-01", b"-02"), None) == (
        0x0AF7651916CD43DD8448EB211C80319C,
        0xB7AD6B7169203331,
        False,
        None,
    )
    assert parse_traceparent(good, b"x" * 600) is not None
    assert parse_traceparent(good, b"x" * 600)[3] is None  # type: ignore[index]
    assert parse_traceparent(None, b"a=1") is None


def test_trace_headers_replace_forwarded_ones_in_the_upstream_request() -> None:
    spec = parse_config(
        "models:\n- name: m\n  deployments:\n  - name: d\n    base_url: http://127.0.0.1:9/v1\n"
        "    forward_headers: [traceparent, tracestate, x-keep]\n"
    )
    deployment = resolve(spec).models[0].deployments[0]
    template = RequestTemplate(deployment, b"127.0.0.1:9")
    ours = b"traceparent: 00-%s-%s-01\r\n" % (b"1" * 32, b"2" * 16)
    data = template.build(
        operation=Operation.CHAT,
        client_path="/v1/chat/completions",
        body={"model": "m", "messages": []},
        raw_body=b"",
        is_stream=False,
        request_id="r1",
        client_headers={b"traceparent": b"client", b"tracestate": b"c=1", b"x-keep": b"1"},
        trace_headers=ours,
    )
    head = data.split(b"\r\n\r\n")[0]
    assert head.count(b"traceparent") == 1
    assert ours.strip() in head
    assert b"tracestate" not in head
    assert b"x-keep: 1" in head
