"""Export to real OTLP receivers started by the test: OTLP/HTTP (protobuf) and OTLP/gRPC.

The gateway runs with ``Tracing.from_spec`` exactly as configured in a file
(BatchSpanProcessor, our encoder inside the SDK's exporters); the receivers
decode what arrives with ``opentelemetry-proto``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from lockgate.config import resolve
from lockgate.config.spec import TracingSpec
from lockgate.dataplane.pipeline.settle import Settlers, UsageTotals
from lockgate.observability.tracing import Tracing
from lockgate.serve import Gateway
from lockgate.sim import SimServer
from tests.observability.otlp_receivers import Received, grpc_receiver, http_receiver
from tests.observability.support import settled
from tests.observability.test_tracing import chat, post, spec_for


@asynccontextmanager
async def exporting_gateway(sim: SimServer, tracing: Tracing) -> AsyncIterator[Gateway]:
    totals = UsageTotals()
    gateway = Gateway(resolve(spec_for(sim)), settler=Settlers(tracing, totals))
    gateway.dataplane.tracing = tracing
    await gateway.start()
    try:
        yield gateway
        await settled(totals, 2)
    finally:
        await gateway.stop(drain_timeout_s=1.0)
        # What a worker does after draining: export what is queued, then stop.
        await asyncio.to_thread(tracing.close)


def assert_two_requests_arrived(received: Received) -> None:
    spans = received.spans()
    servers = [s for s in spans if s["name"] == "chat sim-chat"]
    assert len(servers) == 2
    ok, failed = sorted(servers, key=lambda s: s["attrs"]["http.response.status_code"])
    assert ok["kind"] == "SPAN_KIND_SERVER"
    assert ok["attrs"]["gen_ai.operation.name"] == "chat"
    assert ok["attrs"]["gen_ai.request.model"] == "sim-chat"
    assert ok["attrs"]["gen_ai.usage.output_tokens"] == 16
    assert ok["attrs"]["lockgate.stream"] is False
    assert ok["resource"]["service.name"] == "lockgate-test"
    assert ok["scope"] == "lockgate"
    assert failed["status"] == {
        "code": "STATUS_CODE_ERROR",
        "message": failed["attrs"]["error.type"],
    }
    assert failed["attrs"]["lockgate.error.source"] == "upstream"
    attempts = [s for s in spans if s["name"] == "chat engine-model"]
    assert {a["kind"] for a in attempts} == {"SPAN_KIND_CLIENT"}
    ids = {s["spanId"] for s in servers}
    assert all(a["parentSpanId"] in ids for a in attempts)
    names = sorted(s["name"] for s in spans if s.get("parentSpanId") == ok["spanId"])
    assert names == ["admit", "authenticate", "authorize", "chat engine-model", "relay", "route"]


def spec(exporter: str, endpoint: str, **extra: Any) -> TracingSpec:
    return TracingSpec.model_validate(
        {
            "enabled": True,
            "exporter": exporter,
            "endpoint": endpoint,
            "service_name": "lockgate-test",
            "batch": {"schedule_delay_ms": 50},
            **extra,
        }
    )


@pytest.mark.parametrize("compression", ["none", "gzip"])
async def test_spans_reach_an_otlp_http_receiver(
    sim: SimServer, compression: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOCKGATE_TEST_COLLECTOR_TOKEN", "Bearer s3cret-token")
    with http_receiver() as (url, received):
        headers = {"authorization": {"env": "LOCKGATE_TEST_COLLECTOR_TOKEN"}, "x-tenant": "ops"}
        tracing = Tracing.from_spec(
            spec("otlp_http", url, headers=headers, compression=compression)
        )
        assert tracing is not None
        async with exporting_gateway(sim, tracing) as gw:
            assert await post(gw.port, chat()) == 200
            assert await post(gw.port, chat(), **{"x-sim-fault": "error-500"}) == 500
    assert_two_requests_arrived(received)
    assert received.headers[0]["authorization"] == "Bearer s3cret-token"
    assert received.headers[0]["x-tenant"] == "ops"
    assert received.headers[0]["content-type"] == "application/x-protobuf"


async def test_spans_reach_an_otlp_grpc_receiver(sim: SimServer) -> None:
    with grpc_receiver() as (endpoint, received):
        tracing = Tracing.from_spec(spec("otlp_grpc", endpoint, headers={"X-Tenant": "ops"}))
        assert tracing is not None
        async with exporting_gateway(sim, tracing) as gw:
            assert await post(gw.port, chat()) == 200
            assert await post(gw.port, chat(), **{"x-sim-fault": "error-500"}) == 500
    assert_two_requests_arrived(received)
    assert received.headers[0]["x-tenant"] == "ops"


def test_a_missing_header_secret_stops_start_up_naming_it_not_its_value() -> None:
    broken = spec(
        "otlp_http",
        "http://127.0.0.1:9/v1/traces",
        headers={"authorization": {"env": "LOCKGATE_NO_SUCH_VAR"}},
    )
    with pytest.raises(
        ValueError, match=r"headers\.authorization: environment variable LOCKGATE_NO_SUCH_VAR"
    ):
        Tracing.from_spec(broken)
