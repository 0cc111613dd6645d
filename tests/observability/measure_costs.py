"""What observability costs: per request on the hot path, per second and per scrape off it.

Not a test (pytest does not collect it); the figures in docs/observability.md
come from ``taskset -c 1 .venv/bin/python -m tests.observability.measure_costs``.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import timeit
from collections.abc import Callable
from pathlib import Path

from prometheus_client import generate_latest

from lockgate.config import ModelEntry, resolve
from lockgate.dataplane.context import Principal
from lockgate.observability.access_log import AccessLog
from lockgate.observability.metrics import GatewayMetrics
from lockgate.observability.node import NodeMetrics, render
from lockgate.observability.timings import request_timings
from lockgate.usage import Usage
from tests.observability.support import context
from tests.support import gateway_spec, sim_model


def per_call_us(fn: Callable[[], object], number: int = 200_000) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6


def per_call_ms(fn: Callable[[], object], number: int = 20) -> float:
    return min(timeit.repeat(fn, number=number, repeat=3)) / number * 1e3


def busy_metrics(model: ModelEntry) -> GatewayMetrics:
    """20 models x 3 deployments x 5 statuses: a large but plausible node."""
    metrics = GatewayMetrics()
    for i in range(20):
        named = dataclasses.replace(model, name=f"model-{i}")
        for j in range(3):
            deployment = dataclasses.replace(model.deployments[0], name=f"model-{i}-d{j}")
            for status in (200, 400, 429, 500, 502):
                metrics.settle(
                    context(model=named, deployment=deployment, status=status, is_stream=True,
                            upstream_sent_at=0.0, first_byte_to_client_at=0.01,
                            upstream_done_at=0.09, finished_at=0.1, usage=Usage(5, 5, 10))
                )  # fmt: skip
    return metrics


def main() -> None:
    model = resolve(gateway_spec([sim_model("m", "http://127.0.0.1:9")])).models[0]
    principal = Principal(
        id="api_key:abcdefghijklmnop", is_anonymous=False, organization_id="o", project_id="p"
    )
    ctx = context(model=model, deployment=model.deployments[0], status=200, is_stream=True,
                  started_at=100.0, upstream_sent_at=100.0003, upstream_first_byte_at=100.002,
                  first_byte_to_client_at=100.03, upstream_done_at=101.0, finished_at=101.0002,
                  usage=Usage(10, 101, 111), client_ip="10.0.0.1", requested_model="m",
                  principal=principal)  # fmt: skip
    print(f"request_timings              {per_call_us(lambda: request_timings(ctx)):6.2f} µs")
    metrics = GatewayMetrics(models=["m"])

    def one_request() -> None:
        metrics.request_started()
        metrics.settle(ctx)

    print(f"GatewayMetrics per request   {per_call_us(one_request):6.2f} µs")
    tenants = GatewayMetrics(models=["m"], by_project=True)
    print(f"  with tenant labels         {per_call_us(lambda: tenants.settle(ctx)):6.2f} µs")
    access = AccessLog(os.devnull)
    access.start()
    try:
        print(f"AccessLog.settle (+writer)   {per_call_us(lambda: access.settle(ctx)):6.2f} µs")
        print(f"  building the line          {per_call_us(lambda: access.fields(ctx)):6.2f} µs")
    finally:
        access.close()
    big = busy_metrics(model)
    with tempfile.TemporaryDirectory() as directory:
        nodes = [NodeMetrics(big, Path(directory)) for _ in range(4)]
        for node in nodes[1:]:
            node.write_snapshot()

        def snapshot() -> None:
            nodes[0]._last_written = b""  # force the write
            nodes[0].write_snapshot()

        print(f"snapshot, 60 series          {per_call_ms(snapshot):6.2f} ms per second")
        print(f"render, 4 workers            {per_call_ms(nodes[0].render):6.2f} ms per scrape")
    print(f"render, 1 process            {per_call_ms(lambda: render(big)):6.2f} ms")
    print(
        f"  prometheus_client          {per_call_ms(lambda: generate_latest(big.registry)):6.2f} ms"
    )


if __name__ == "__main__":
    main()
