"""Upstream health metrics after known traffic: ejection, breaker, retries, retry budget.

Real gateway, real simulators (one healthy, one answering every request with a
500), the router's own state read by ``RoutingCollector`` as a scrape would.
"""

from __future__ import annotations

import asyncio
from typing import Any

from lockgate.config import resolve
from lockgate.observability.metrics import GatewayMetrics
from lockgate.observability.node import render
from lockgate.observability.routing_metrics import RoutingCollector, routed_entries
from tests.observability.support import Samples, parse, value
from tests.routing.fleet import FAST, chat, model, replicas, sim_config, spec, url
from tests.support import RunningGateway, running_gateway

BROKEN = sim_config(fault_rates={"error-500": 1.0})
FAST_RETRIES = {"backoff_base_ms": 1, "backoff_max_ms": 2}


def scrape(gw: RunningGateway, *models: str) -> Samples:
    metrics = GatewayMetrics()
    router = gw.gateway.dataplane.router
    metrics.add_collector(RoutingCollector(router, models, asyncio.get_running_loop().time))
    return parse(render(metrics)[1])


def upstream(samples: Samples, name: str, deployment: str, **labels: str) -> float:
    return value(samples, name, model="chat", deployment=deployment, **labels)


async def test_a_failing_deployment_is_ejected_and_the_gauges_say_so() -> None:
    routing: dict[str, Any] = {
        "strategy": "weighted_random",
        "outlier": {"consecutive_failures": 2, "base_ejection_s": 60},
        "breaker": {"enabled": False},
        "retries": FAST_RETRIES,
    }
    async with replicas(FAST, BROKEN) as fleet:
        gateway_spec = spec([model("chat", list(fleet), routing=routing)])
        async with running_gateway(gateway_spec) as gw:
            before = scrape(gw, "chat")
            assert upstream(before, "lockgate_upstream_healthy", "chat-r1") == 1
            for _ in range(40):  # the broken one fails twice in a row, then is ejected
                response = await chat(gw.port, "chat")
                assert response.status == 200  # retried on the good one
            samples = scrape(gw, "chat")
    assert upstream(samples, "lockgate_upstream_healthy", "chat-r1") == 0
    assert upstream(samples, "lockgate_upstream_ejected", "chat-r1") == 1
    assert upstream(samples, "lockgate_upstream_ejections_total", "chat-r1") == 1
    assert upstream(samples, "lockgate_upstream_healthy", "chat-r0") == 1
    assert upstream(samples, "lockgate_upstream_ejected", "chat-r0") == 0
    assert upstream(samples, "lockgate_upstream_ejections_total", "chat-r0") == 0
    for deployment in ("chat-r0", "chat-r1"):
        assert upstream(samples, "lockgate_upstream_outstanding_requests", deployment) == 0
        assert upstream(samples, "lockgate_upstream_health_check_up", deployment) == 1
        # No breaker configured: reported closed.
        assert upstream(samples, "lockgate_upstream_circuit_state", deployment, state="closed") == 1
    # Each of the two failures was retried once (on the good deployment), within budget.
    assert value(samples, "lockgate_upstream_retries_total", model="chat") == 2
    assert value(samples, "lockgate_upstream_retry_budget_exhausted_total", model="chat") == 0


async def test_an_open_breaker_shows_as_open_then_half_open() -> None:
    routing: dict[str, Any] = {
        "outlier": {"enabled": False},
        "breaker": {"window": 4, "min_calls": 4, "failure_ratio": 0.5, "open_s": 0.3},
        "retries": {"max_attempts": 1},
    }
    async with replicas(BROKEN) as fleet:
        gateway_spec = spec([model("chat", list(fleet), routing=routing)])
        async with running_gateway(gateway_spec) as gw:
            statuses = [(await chat(gw.port, "chat")).status for _ in range(6)]
            opened = scrape(gw, "chat")
            await asyncio.sleep(0.35)
            probing = scrape(gw, "chat")
    # Four failures open it; then the gateway refuses without calling the deployment.
    assert statuses == [500, 500, 500, 500, 503, 503]
    assert upstream(opened, "lockgate_upstream_circuit_state", "chat-r0", state="open") == 1
    assert upstream(opened, "lockgate_upstream_circuit_state", "chat-r0", state="closed") == 0
    assert upstream(opened, "lockgate_upstream_circuit_opens_total", "chat-r0") == 1
    assert upstream(opened, "lockgate_upstream_healthy", "chat-r0") == 0
    assert upstream(opened, "lockgate_upstream_ejected", "chat-r0") == 0
    # After open_s the next request may probe: half-open, which routing would try.
    assert upstream(probing, "lockgate_upstream_circuit_state", "chat-r0", state="half_open") == 1
    assert upstream(probing, "lockgate_upstream_healthy", "chat-r0") == 1


async def test_retries_beyond_the_budget_are_counted_as_exhausted() -> None:
    routing: dict[str, Any] = {
        "outlier": {"enabled": False},
        "breaker": {"enabled": False},
        "retries": {"max_attempts": 3, **FAST_RETRIES},
    }
    # A budget of exactly one retry per 10 s window, and nothing in proportion to traffic.
    budget = {"retry_budget": {"ratio": 0, "min_per_s": 0.1, "window_s": 10}}
    async with replicas(BROKEN) as (broken,):
        gateway_spec = spec([model("chat", [broken], routing=routing)], routing=budget)
        async with running_gateway(gateway_spec) as gw:
            first = await chat(gw.port, "chat")  # fails, retried once, then refused
            second = await chat(gw.port, "chat")  # fails, refused at once
            samples = scrape(gw, "chat")
    assert (first.status, second.status) == (500, 500)
    assert value(samples, "lockgate_upstream_retries_total", model="chat") == 1
    assert value(samples, "lockgate_upstream_retry_budget_exhausted_total", model="chat") == 2


async def test_a_versioned_model_is_reported_per_version() -> None:
    async with replicas(FAST, FAST) as (v1, v2):
        versions = [
            {"version": "v1", "deployments": [{"name": "v1-r0", "base_url": url(v1)}]},
            {"version": "v2", "deployments": [{"name": "v2-r0", "base_url": url(v2)}]},
        ]
        gateway_spec = spec([{"name": "chat", "versions": versions, "default_version": "v2"}])
        config = resolve(gateway_spec)
        entries = routed_entries(config.models)
        async with running_gateway(gateway_spec) as gw:
            assert (await chat(gw.port, "chat")).status == 200
            metrics = GatewayMetrics()
            loop_time = asyncio.get_running_loop().time
            router = gw.gateway.dataplane.router
            metrics.add_collector(RoutingCollector(router, entries, loop_time))
            samples = parse(render(metrics)[1])
    assert entries == ["chat@v1", "chat@v2"]
    healthy = "lockgate_upstream_healthy"
    assert value(samples, healthy, model="chat@v1", deployment="v1-r0") == 1
    assert value(samples, healthy, model="chat@v2", deployment="v2-r0") == 1
    assert value(samples, "lockgate_upstream_retries_total", model="chat@v2") == 0
