"""Traces end to end: real requests through the gateway in front of the simulator.

Spans go to the SDK's ``InMemorySpanExporter``; the tests check the tree (who
is whose parent), the names, the GenAI and lockgate attributes, the status on
every kind of failure, and W3C trace context in and out.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson
import pytest
from opentelemetry.trace import SpanKind, StatusCode

from lockgate.config import GatewaySpec
from lockgate.dataplane.context import RequestContext
from lockgate.observability.access_log import AccessLog
from lockgate.sim import SimConfig, SimServer
from tests.observability.tracing_support import (
    attrs,
    by_name,
    children,
    children_of,
    one,
    span_id,
    trace_id,
    traced_gateway,
    upstream_headers,
)
from tests.support import gateway_spec, raw_request, running_gateway, sim_model

CLIENT_TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN_ID = "b7ad6b7169203331"


def chat(model: str = "sim-chat", **extra: Any) -> bytes:
    return orjson.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}], **extra})


def spec_for(sim: SimServer, **model: Any) -> GatewaySpec:
    entry = sim_model("sim-chat", sim.base_url, upstream_model="engine-model")
    entry.update(model)
    return gateway_spec([entry])


async def post(port: int, body: bytes, **headers: str) -> int:
    response = await raw_request(port, "POST", "/v1/chat/completions", body, headers)
    return response.status


async def test_a_request_is_one_server_span_with_a_child_per_stage(sim: SimServer) -> None:
    async with traced_gateway(spec_for(sim)) as gw:
        answer = await raw_request(
            gw.port, "POST", "/v1/chat/completions", chat(max_tokens=12, model="sim-chat")
        )
        spans = await gw.settled(1)
    assert answer.status == 200
    server = one(spans, "chat sim-chat")
    assert server.kind is SpanKind.SERVER
    assert server.parent is None, "no traceparent came in: the trace starts here"
    assert children(spans, server) == [
        "authenticate",
        "authorize",
        "admit",
        "route",
        "chat engine-model",
        "relay",
    ]
    assert {trace_id(s) for s in spans} == {trace_id(server)}
    assert server.status.status_code is StatusCode.UNSET
    a = attrs(server)
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == a["gen_ai.system"] == "openai"
    assert a["gen_ai.request.model"] == "sim-chat"
    assert a["gen_ai.response.model"] == "sim-chat"
    assert a["gen_ai.request.max_tokens"] == 12
    assert a["gen_ai.usage.input_tokens"] > 0
    assert a["gen_ai.usage.output_tokens"] == 12
    assert a["http.response.status_code"] == 200
    assert a["lockgate.request_id"] == answer.headers["x-request-id"]
    assert a["lockgate.principal"] == "anonymous"
    assert (a["lockgate.model"], a["lockgate.deployment"]) == ("sim-chat", "sim-chat-d1")
    assert a["lockgate.attempts"] == 1
    assert "error.type" not in a
    attempt = one(spans, "chat engine-model")
    assert attempt.kind is SpanKind.CLIENT
    b = attrs(attempt)
    assert (b["server.address"], b["server.port"]) == ("127.0.0.1", sim.port)
    assert (b["lockgate.deployment"], b["lockgate.attempt"]) == ("sim-chat-d1", 1)
    assert b["gen_ai.request.model"] == "engine-model"
    assert b["http.response.status_code"] == 200
    assert b["gen_ai.usage.output_tokens"] == 12
    assert "lockgate.retry_reason" not in b
    # Stages follow each other inside the request.
    assert server.start_time is not None
    assert server.end_time is not None
    for span in spans:
        assert span.start_time is not None
        assert span.end_time is not None
        assert server.start_time <= span.start_time <= span.end_time <= server.end_time


async def test_a_stream_records_time_to_first_token_and_usage(sim: SimServer) -> None:
    async with traced_gateway(spec_for(sim)) as gw:
        assert await post(gw.port, chat(stream=True)) == 200
        spans = await gw.settled(1)
    a = attrs(one(spans, "chat sim-chat"))
    assert a["lockgate.stream"] is True
    assert a["lockgate.ttft_ms"] >= 0
    assert a["gen_ai.usage.output_tokens"] == 16


async def test_unknown_model_fails_in_authorize_with_its_code_and_no_attempt(
    sim: SimServer,
) -> None:
    async with traced_gateway(spec_for(sim)) as gw:
        assert await post(gw.port, chat(model="no-such-model")) == 404
        assert await post(gw.port, chat(model="free text, perhaps a prompt")) == 404
        spans = await gw.settled(2)
    servers = by_name(spans)["chat"]
    assert len(servers) == 2, "an unresolved model never names a span"
    first, second = sorted(servers, key=lambda s: s.start_time or 0)
    assert first.status.status_code is StatusCode.ERROR
    assert first.status.description == "model_not_found"
    a = attrs(first)
    assert (a["error.type"], a["lockgate.error.source"]) == ("model_not_found", "client")
    assert a["http.response.status_code"] == 404
    assert a["gen_ai.request.model"] == "no-such-model"
    assert "gen_ai.request.model" not in attrs(second), "free text never reaches a span"
    assert children(spans, first) == ["authenticate", "authorize"]
    authorize = one(children_of(spans, first), "authorize")
    assert authorize.status.description == "model_not_found"


async def test_an_upstream_500_retried_is_two_attempt_spans(sim: SimServer) -> None:
    routing = {"retries": {"max_attempts": 2, "backoff_base_ms": 1}}
    async with traced_gateway(spec_for(sim, routing=routing)) as gw:
        status = await post(gw.port, chat(), **{"x-sim-fault": "error-500"})
        spans = await gw.settled(1)
    assert status == 500
    server = one(spans, "chat sim-chat")
    assert children(spans, server) == [
        "authenticate",
        "authorize",
        "admit",
        "route",
        "chat engine-model",
        "chat engine-model",
    ], "both attempts, and no relay: nothing was relayed"
    first, second = sorted(by_name(spans)["chat engine-model"], key=lambda s: s.start_time or 0)
    for number, attempt in enumerate((first, second), start=1):
        a = attrs(attempt)
        assert a["lockgate.attempt"] == number
        assert a["http.response.status_code"] == 500
        assert attempt.status.status_code is StatusCode.ERROR
        assert a["error.type"] == attempt.status.description
    assert "lockgate.retry_reason" not in attrs(first)
    assert attrs(second)["lockgate.retry_reason"] == attrs(first)["error.type"]
    assert first.end_time is not None
    assert second.start_time is not None
    assert first.end_time <= second.start_time
    a = attrs(server)
    assert a["lockgate.error.source"] == "upstream"
    assert a["lockgate.attempts"] == 2
    assert server.status.status_code is StatusCode.ERROR
    # Each attempt told the engine its own span id, under the same trace.
    sent = [h["traceparent"] for h in upstream_headers(sim)]
    assert sent == [
        f"00-{trace_id(server):032x}-{span_id(first):016x}-01",
        f"00-{trace_id(server):032x}-{span_id(second):016x}-01",
    ]


async def test_a_rate_limited_request_fails_in_admit(sim: SimServer) -> None:
    async with traced_gateway(spec_for(sim, limits={"requests_per_minute": 1})) as gw:
        assert await post(gw.port, chat()) == 200
        assert await post(gw.port, chat()) == 429
        spans = await gw.settled(2)
    refused = [
        s for s in by_name(spans)["chat sim-chat"] if s.status.status_code is StatusCode.ERROR
    ]
    assert len(refused) == 1
    server = refused[0]
    a = attrs(server)
    assert a["http.response.status_code"] == 429
    assert a["lockgate.error.source"] == "client"
    code = a["error.type"]
    assert code == server.status.description == a["lockgate.error.code"]
    assert children(spans, server) == ["authenticate", "authorize", "admit"]
    assert one(children_of(spans, server), "admit").status.description == code


async def test_a_client_that_leaves_mid_stream_is_the_clients_error_in_the_trace() -> None:
    slow = SimConfig(ttft_ms=1, tokens_per_s=200, output_tokens=16)
    async with (
        SimServer(slow, host="127.0.0.1", port=0) as sim,
        traced_gateway(spec_for(sim)) as gw,
    ):
        body = chat(stream=True)
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\nx-sim-output-tokens: 5000\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body)
        )
        received = b""
        async with asyncio.timeout(5):
            while received.count(b"data: ") < 2:
                chunk = await reader.read(65536)
                assert chunk
                received += chunk
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
        spans = await gw.settled(1)
    server = one(spans, "chat sim-chat")
    assert server.status.status_code is StatusCode.ERROR
    assert server.status.description == "client_disconnected"
    assert attrs(server)["lockgate.error.source"] == "client"
    assert one(spans, "relay").status.description == "client_disconnected"
    assert attrs(one(spans, "chat engine-model"))["error.type"] == "client_disconnected"


async def test_the_callers_traceparent_is_the_parent_and_reaches_the_upstream(
    sim: SimServer,
) -> None:
    async with traced_gateway(spec_for(sim), sampling_ratio=0.0) as gw:
        headers = {
            "traceparent": f"00-{CLIENT_TRACE_ID}-{CLIENT_SPAN_ID}-01",
            "tracestate": "vendor=abc,other=1",
        }
        assert await post(gw.port, chat(), **headers) == 200
        spans = await gw.settled(1)
    server = one(spans, "chat sim-chat")
    assert f"{trace_id(server):032x}" == CLIENT_TRACE_ID, "sampled by the caller: kept at ratio 0"
    assert server.parent is not None
    assert server.parent.is_remote
    assert f"{server.parent.span_id:016x}" == CLIENT_SPAN_ID
    assert server.context is not None
    assert server.context.trace_state.to_header() == "vendor=abc,other=1"
    attempt = one(spans, "chat engine-model")
    seen = upstream_headers(sim)[-1]
    assert seen["traceparent"] == f"00-{CLIENT_TRACE_ID}-{span_id(attempt):016x}-01"
    assert seen["tracestate"] == "vendor=abc,other=1"


async def test_the_access_log_line_carries_the_trace_id(sim: SimServer) -> None:
    log = MemoryLog()
    async with traced_gateway(spec_for(sim), log) as gw:
        headers = {"traceparent": f"00-{CLIENT_TRACE_ID}-{CLIENT_SPAN_ID}-01"}
        assert await post(gw.port, chat(), **headers) == 200
        assert await post(gw.port, chat()) == 200
        spans = await gw.settled(2)
    from_caller, fresh = log.lines
    assert from_caller["trace_id"] == CLIENT_TRACE_ID
    servers = [s for s in spans if s.name == "chat sim-chat"]
    assert {f"{trace_id(s):032x}" for s in servers} == {CLIENT_TRACE_ID, fresh["trace_id"]}


class MemoryLog:
    """The access log's fields for each settled request, kept in memory."""

    def __init__(self) -> None:
        self._fields = AccessLog().fields  # never started: nothing is written
        self.lines: list[dict[str, Any]] = []

    def settle(self, ctx: RequestContext) -> None:
        self.lines.append(self._fields(ctx))


async def test_a_caller_that_did_not_sample_gets_no_spans_but_its_trace_goes_on(
    sim: SimServer,
) -> None:
    async with traced_gateway(spec_for(sim)) as gw:
        headers = {"traceparent": f"00-{CLIENT_TRACE_ID}-{CLIENT_SPAN_ID}-00"}
        assert await post(gw.port, chat(), **headers) == 200
        spans = await gw.settled(1)
    assert spans == []
    sent = upstream_headers(sim)[-1]["traceparent"]
    assert sent.startswith(f"00-{CLIENT_TRACE_ID}-")
    assert sent.endswith("-00")
    assert sent.split("-")[2] != CLIENT_SPAN_ID, "our own (unrecorded) span is the parent"


@pytest.mark.parametrize(
    "traceparent",
    [
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",  # zero trace id
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",  # zero parent
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  # forbidden version
        "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",  # upper case
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",  # v00 is exact
        "garbage",
    ],
)
async def test_an_invalid_traceparent_starts_a_new_trace(sim: SimServer, traceparent: str) -> None:
    async with traced_gateway(spec_for(sim)) as gw:
        assert await post(gw.port, chat(), traceparent=traceparent, tracestate="a=b") == 200
        spans = await gw.settled(1)
    server = one(spans, "chat sim-chat")
    assert server.parent is None
    assert f"{trace_id(server):032x}" != CLIENT_TRACE_ID
    assert "tracestate" not in upstream_headers(sim)[-1]


async def test_a_future_traceparent_version_is_understood(sim: SimServer) -> None:
    async with traced_gateway(spec_for(sim)) as gw:
        future = f"01-{CLIENT_TRACE_ID}-{CLIENT_SPAN_ID}-01-what-comes-next"
        assert await post(gw.port, chat(), traceparent=future) == 200
        spans = await gw.settled(1)
    assert f"{trace_id(one(spans, 'chat sim-chat')):032x}" == CLIENT_TRACE_ID


async def test_sampling_ratio_zero_records_nothing_yet_propagates(sim: SimServer) -> None:
    async with traced_gateway(spec_for(sim), sampling_ratio=0.0) as gw:
        for _ in range(5):
            assert await post(gw.port, chat()) == 200
        spans = await gw.settled(5)
    assert spans == []
    sent = [h["traceparent"] for h in upstream_headers(sim)]
    assert len(sent) == 5
    assert all(t.endswith("-00") for t in sent)
    assert len({t.split("-")[1] for t in sent}) == 5, "a new trace per request"


async def test_a_client_traceparent_is_replaced_not_duplicated_when_forwarded(
    sim: SimServer,
) -> None:
    spec = spec_for(
        sim,
        deployments=[
            {
                "name": "sim-chat-d1",
                "base_url": sim.base_url,
                "upstream_model": "engine-model",
                "forward_headers": ["x-sim-*", "traceparent", "tracestate"],
            }
        ],
    )
    async with traced_gateway(spec) as gw:
        headers = {"traceparent": f"00-{CLIENT_TRACE_ID}-{CLIENT_SPAN_ID}-01"}
        assert await post(gw.port, chat(), **headers) == 200
        spans = await gw.settled(1)
    raw_headers = sim.app.recent[-1][3]
    assert list(raw_headers).count(b"traceparent") == 1
    assert raw_headers[b"traceparent"].decode().split("-")[2] == (
        f"{span_id(one(spans, 'chat engine-model')):016x}"
    )


async def test_tracing_off_adds_nothing_upstream(sim: SimServer) -> None:
    async with running_gateway(spec_for(sim)) as gw:
        assert gw.gateway.dataplane.tracing is None
        assert (
            await post(gw.port, chat(), traceparent=f"00-{CLIENT_TRACE_ID}-{CLIENT_SPAN_ID}-01")
            == 200
        )
    assert "traceparent" not in upstream_headers(sim)[-1]


async def test_the_trace_id_is_on_the_context_for_the_access_log(sim: SimServer) -> None:
    seen: list[str | None] = []

    class Recorder:
        def settle(self, ctx: Any) -> None:
            seen.append(ctx.trace.trace_id if ctx.trace is not None else None)

    async with traced_gateway(spec_for(sim), Recorder()) as gw:
        headers = {"traceparent": f"00-{CLIENT_TRACE_ID}-{CLIENT_SPAN_ID}-01"}
        assert await post(gw.port, chat(), **headers) == 200
        await gw.settled(1)
    assert seen == [CLIENT_TRACE_ID]
