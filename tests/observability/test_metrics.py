"""Request metrics after known traffic through a real gateway and the simulator.

Exact values: every request is counted once under bounded labels, and each
histogram holds exactly the requests it is defined for.
"""

from __future__ import annotations

from collections import Counter

import orjson
import pytest
from prometheus_client import generate_latest

from lockgate.config import resolve
from lockgate.errors import UpstreamHttpError
from lockgate.observability.admission_metrics import AdmissionCollector
from lockgate.observability.metrics import GatewayMetrics
from lockgate.observability.node import NodeMetrics, render
from lockgate.sim import SimServer
from lockgate.usage import Usage
from tests.observability.support import context, observed_gateway, parse, settled, total, value
from tests.support import RawResponse, gateway_spec, raw_request, sim_model

CHAT = orjson.dumps({"model": "sim-chat", "messages": [{"role": "user", "content": "hi"}]})
STREAM = orjson.dumps(
    {"model": "sim-chat", "messages": [{"role": "user", "content": "hi"}], "stream": True}
)
UNKNOWN = orjson.dumps({"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]})
SERIES = {"model": "sim-chat", "deployment": "sim-chat-d1"}
OK = {**SERIES, "status_class": "2xx", "error_source": "none", "error_code": "none"}


async def post(port: int, body: bytes, **headers: str) -> RawResponse:
    return await raw_request(port, "POST", "/v1/chat/completions", body, headers)


def seen_by_client(response: RawResponse) -> tuple[str, str, str]:
    """(status class, error source, error code) as the response told the client."""
    return (
        f"{response.status // 100}xx",
        response.headers.get("x-lockgate-error-source", "none"),
        response.headers.get("x-lockgate-error-code", "none"),
    )


async def test_five_answers_and_two_upstream_errors_are_counted_exactly(sim: SimServer) -> None:
    metrics = GatewayMetrics(models=["sim-chat"], deployments=["sim-chat-d1"])
    spec = gateway_spec([sim_model("sim-chat", sim.base_url)])
    async with observed_gateway(spec, metrics) as (gw, totals):
        answers = [await post(gw.port, CHAT) for _ in range(5)]
        # Last: whatever routing does after upstream failures (retry, eject) must not
        # change the answers above.
        errors = [await post(gw.port, CHAT, **{"x-sim-fault": "error-500"}) for _ in range(2)]
        await settled(totals, 7)
    samples = parse(NodeMetrics(metrics).render()[1])
    assert [a.status for a in answers] == [200] * 5
    assert value(samples, "lockgate_requests_total", **OK) == 5
    assert all(e.status >= 500 for e in errors)
    assert errors[0].headers["x-lockgate-error-source"] == "upstream"
    # Each error is counted under what the client was told: status class, source, code.
    counted: Counter[tuple[str, str, str]] = Counter()
    for (name, label_set), count in samples.items():
        labels = dict(label_set)
        if name == "lockgate_requests_total" and labels["error_source"] != "none":
            assert labels["model"] == "sim-chat"
            key = (labels["status_class"], labels["error_source"], labels["error_code"])
            counted[key] += int(count)
    assert counted == Counter(seen_by_client(e) for e in errors)
    assert total(samples, "lockgate_requests_total", lambda labels: True) == 7
    assert (
        total(
            samples, "lockgate_request_duration_seconds_count", lambda ls: ls["model"] == "sim-chat"
        )
        == 7
    )
    assert value(samples, "lockgate_upstream_duration_seconds_count", **SERIES) >= 5
    assert value(samples, "gen_ai_server_time_to_first_token_seconds_count", **SERIES) == 0
    token = "gen_ai_client_token_usage"
    assert value(samples, f"{token}_count", **SERIES, gen_ai_token_type="input") == 5
    assert value(samples, f"{token}_sum", **SERIES, gen_ai_token_type="input") == (
        totals.prompt_tokens
    )
    assert value(samples, f"{token}_sum", **SERIES, gen_ai_token_type="output") == 5 * 16
    assert value(samples, "lockgate_requests_in_flight") == 0


async def test_streams_and_unknown_models_fill_exactly_their_histograms(sim: SimServer) -> None:
    metrics = GatewayMetrics(models=["sim-chat"], deployments=["sim-chat-d1"])
    spec = gateway_spec([sim_model("sim-chat", sim.base_url)])
    async with observed_gateway(spec, metrics) as (gw, totals):
        answers = [await post(gw.port, CHAT) for _ in range(2)]
        answers += [await post(gw.port, STREAM) for _ in range(3)]
        unknown = await post(gw.port, UNKNOWN)
        await settled(totals, 6)
    assert [a.status for a in answers] == [200] * 5
    assert unknown.status == 404
    samples = parse(NodeMetrics(metrics).render()[1])
    assert value(samples, "lockgate_requests_total", **OK) == 5
    # The unknown model is a client error before any model or deployment: "none", never
    # the name the client sent.
    assert value(
        samples, "lockgate_requests_total", model="none", deployment="none",
        status_class="4xx", error_source="client", error_code="model_not_found",
    ) == 1  # fmt: skip
    # Every request has a duration; those that reached the engine an upstream time, and
    # their total splits exactly into upstream and gateway time.
    assert value(samples, "lockgate_request_duration_seconds_count", **SERIES) == 5
    assert value(samples, "lockgate_request_duration_seconds_count", model="none",
                 deployment="none") == 1  # fmt: skip
    assert value(samples, "lockgate_upstream_duration_seconds_count", **SERIES) == 5
    assert value(samples, "lockgate_gateway_overhead_seconds_count", **SERIES) == 5
    overhead = value(samples, "lockgate_gateway_overhead_seconds_sum", **SERIES)
    duration = value(samples, "lockgate_request_duration_seconds_sum", **SERIES)
    upstream = value(samples, "lockgate_upstream_duration_seconds_sum", **SERIES)
    assert duration == pytest.approx(upstream + overhead, abs=1e-6)
    # Time to first token and per output token: streams only (16 tokens each).
    assert value(samples, "gen_ai_server_time_to_first_token_seconds_count", **SERIES) == 3
    assert value(samples, "gen_ai_server_time_per_output_token_seconds_count", **SERIES) == 3
    token = "gen_ai_client_token_usage"
    assert value(samples, f"{token}_count", **SERIES, gen_ai_token_type="output") == 5
    assert value(samples, f"{token}_sum", **SERIES, gen_ai_token_type="output") == (
        totals.completion_tokens
    )
    assert totals.completion_tokens == 5 * 16


def _target() -> tuple[object, object]:
    config = resolve(gateway_spec([sim_model("m", "http://127.0.0.1:9")]))
    model = config.models[0]
    return model, model.deployments[0]


def test_timings_land_in_the_right_buckets() -> None:
    model, deployment = _target()
    metrics = GatewayMetrics()
    metrics.request_started()
    assert parse(render(metrics)[1])[("lockgate_requests_in_flight", frozenset())] == 1
    metrics.settle(
        context(
            model=model,
            deployment=deployment,
            status=200,
            is_stream=True,
            started_at=100.0,
            upstream_sent_at=100.001,
            upstream_first_byte_at=100.002,
            first_byte_to_client_at=100.030,
            upstream_done_at=101.029,
            finished_at=101.030,
            usage=Usage(prompt_tokens=10, completion_tokens=101),
        )
    )
    samples = parse(render(metrics)[1])
    series = {"model": "m", "deployment": "m-d1"}

    def bucket(name: str, le: str) -> float:
        return value(samples, f"{name}_bucket", **series, le=le)

    # total 1.03 s; upstream 1.028 s; gateway 2 ms; TTFT 29 ms; TPOT (1.029-0.030)/100 = 9.99 ms
    assert (bucket("lockgate_request_duration_seconds", "0.64"),
            bucket("lockgate_request_duration_seconds", "1.28")) == (0, 1)  # fmt: skip
    assert (bucket("lockgate_gateway_overhead_seconds", "0.001"),
            bucket("lockgate_gateway_overhead_seconds", "0.0025")) == (0, 1)  # fmt: skip
    assert (bucket("gen_ai_server_time_to_first_token_seconds", "0.02"),
            bucket("gen_ai_server_time_to_first_token_seconds", "0.04")) == (0, 1)  # fmt: skip
    assert (bucket("gen_ai_server_time_per_output_token_seconds", "0.0075"),
            bucket("gen_ai_server_time_per_output_token_seconds", "0.01")) == (0, 1)  # fmt: skip
    tokens = {**series, "gen_ai_token_type": "output"}
    assert value(samples, "gen_ai_client_token_usage_bucket", **tokens, le="64.0") == 0
    assert value(samples, "gen_ai_client_token_usage_bucket", **tokens, le="256.0") == 1
    assert value(samples, "lockgate_requests_in_flight") == 0


def test_label_values_are_bounded() -> None:
    """Upstream-chosen error codes and tenants cannot grow the series without bound."""
    model, deployment = _target()
    metrics = GatewayMetrics(models=["m"], by_project=True, max_projects=2, max_error_codes=2)

    def fail(code: str, project: str) -> None:
        from lockgate.dataplane.context import Principal

        error = UpstreamHttpError("x", status=502, error_type="t", code=code, param=None,
                                  headers=())  # fmt: skip
        metrics.settle(
            context(
                model=model,
                deployment=deployment,
                status=502,
                error=error,
                principal=Principal(id=f"api_key:{project}", project_id=project),
            )
        )

    for i in range(50):
        fail(f"code_{i % 5}", f"proj_{i % 10}")
    fail("has spaces, and 'quotes'", "proj_0")
    samples = parse(render(metrics)[1])
    codes = {dict(ls)["error_code"] for (n, ls) in samples if n == "lockgate_requests_total"}
    projects = {dict(ls)["project"] for (n, ls) in samples if n == "lockgate_requests_total"}
    assert codes == {"code_0", "code_1", "other"}
    assert projects == {"proj_0", "proj_1", "other"}
    assert total(samples, "lockgate_requests_total", lambda labels: True) == 51


async def test_admission_counters_are_read_at_scrape_time(sim: SimServer) -> None:
    model = sim_model("sim-chat", sim.base_url)
    model["limits"] = {"requests_per_minute": 3}
    metrics = GatewayMetrics(models=["sim-chat"])
    async with observed_gateway(gateway_spec([model]), metrics) as (gw, totals):
        admitter = gw.dataplane.stages.admitter
        metrics.add_collector(AdmissionCollector(admitter))  # type: ignore[arg-type]
        statuses = [(await post(gw.port, CHAT)).status for _ in range(4)]
        await settled(totals, 4)
        samples = parse(render(metrics)[1])
    assert statuses == [200, 200, 200, 429]
    decisions = "lockgate_admission_decisions_total"
    assert value(samples, decisions, outcome="admitted") == 3
    assert value(samples, decisions, outcome="refused") == 1
    assert (
        value(
            samples,
            "lockgate_admission_refusals_total",
            scope="model",
            dimension="requests_per_minute",
        )
        == 1
    )
    assert value(samples, "lockgate_limiter_backend_failures_total") == 0
    assert value(
        samples, "lockgate_requests_total", model="sim-chat", deployment="none",
        status_class="4xx", error_source="client", error_code="rate_limit_exceeded",
    ) == 1  # fmt: skip


def test_admission_collector_without_sources_exposes_zeros() -> None:
    samples = parse(generate_latest(AdmissionCollector()))
    assert value(samples, "lockgate_admission_decisions_total", outcome="admitted") == 0
    assert ("lockgate_limiter_backend_failures_total", frozenset()) in samples


def test_the_registry_and_the_fast_renderer_agree() -> None:
    """``metrics.registry`` (prometheus_client's exposition) and ``render`` show the same."""
    model, deployment = _target()
    metrics = GatewayMetrics(by_project=True)
    metrics.add_collector(AdmissionCollector())
    for status, stream in ((200, False), (200, True), (503, False)):
        metrics.settle(
            context(
                model=model,
                deployment=deployment,
                status=status,
                is_stream=stream,
                upstream_sent_at=0.001,
                first_byte_to_client_at=0.01,
                upstream_done_at=0.2,
                finished_at=0.25,
                usage=Usage(3, 7, 10),
            )
        )
    ours = parse(render(metrics)[1])
    theirs = parse(generate_latest(metrics.registry))
    assert ours == theirs
    assert value(ours, "lockgate_admission_decisions_total", outcome="admitted") == 0
    assert value(ours, "gen_ai_client_token_usage_count", model="m", deployment="m-d1",
                 gen_ai_token_type="output") == 3  # fmt: skip


def test_disconnects_and_crashes_are_attributed() -> None:
    """A client that left is the client's doing; a request that ended with neither an
    answer nor an error (an unexpected exception in the pipeline) is the gateway's."""
    model, deployment = _target()
    metrics = GatewayMetrics()
    metrics.settle(context(model=model, deployment=deployment, is_client_disconnected=True))
    metrics.settle(context(model=model, deployment=deployment, status=200,
                           is_client_disconnected=True))  # fmt: skip
    metrics.settle(context(model=model, deployment=deployment))
    samples = parse(render(metrics)[1])
    series = {"model": "m", "deployment": "m-d1"}
    assert value(samples, "lockgate_requests_total", **series, status_class="none",
                 error_source="client", error_code="client_disconnected") == 1  # fmt: skip
    assert value(samples, "lockgate_requests_total", **series, status_class="2xx",
                 error_source="client", error_code="client_disconnected") == 1  # fmt: skip
    assert value(samples, "lockgate_requests_total", **series, status_class="none",
                 error_source="gateway", error_code="internal_error") == 1  # fmt: skip
