"""One scrape sums every worker process: real forked processes, each with known traffic.

Three workers and the scraping process record different traffic; one worker is
killed (a crash: no final snapshot), one exits cleanly. Counters and histograms
keep every worker's totals, exited ones included, so the node's totals never go
backwards; gauges count live workers only; scrape-time collectors (admission
counters) are summed like everything else.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from lockgate.admission.admitter import AdmissionStats
from lockgate.admission.fair_queue import GateStats
from lockgate.config import resolve
from lockgate.errors import UpstreamFailure
from lockgate.observability.admission_metrics import AdmissionCollector
from lockgate.observability.metrics import GatewayMetrics
from lockgate.observability.node import NodeMetrics, prepare_directory
from lockgate.usage import Usage
from tests.observability.support import Samples, context, parse, value
from tests.support import gateway_spec, sim_model

SERIES = {"model": "m", "deployment": "m-d1"}
OK = {**SERIES, "status_class": "2xx", "error_source": "none", "error_code": "none"}
FAILED = {**SERIES, "status_class": "5xx", "error_source": "upstream",
          "error_code": "upstream_unavailable"}  # fmt: skip


@dataclass(frozen=True)
class Traffic:
    ok: int
    failed: int
    in_flight: int  # started, never settled (still running when scraped)
    admitted: int


class FakeAdmitter:
    def __init__(self, admitted: int) -> None:
        self.stats = AdmissionStats(admitted=admitted)

    def gate_stats(self) -> dict[str, GateStats]:
        return {}


def record(traffic: Traffic, directory: Path) -> tuple[GatewayMetrics, NodeMetrics]:
    """What one worker does: build its metrics after the fork, serve known traffic."""
    model = resolve(gateway_spec([sim_model("m", "http://127.0.0.1:9")])).models[0]
    metrics = GatewayMetrics(models=["m"])
    metrics.add_collector(AdmissionCollector(FakeAdmitter(traffic.admitted)))
    node = NodeMetrics(metrics, directory)
    for _ in range(traffic.in_flight + traffic.ok + traffic.failed):
        metrics.request_started()
    for _ in range(traffic.ok):
        metrics.settle(
            context(model=model, deployment=model.deployments[0], status=200,
                    upstream_sent_at=0.0, finished_at=0.5, usage=Usage(10, 20, 30))
        )  # fmt: skip
    for _ in range(traffic.failed):
        metrics.settle(
            context(model=model, deployment=model.deployments[0], status=502,
                    upstream_sent_at=0.0, finished_at=0.1, error=UpstreamFailure("down"))
        )  # fmt: skip
    return metrics, node


def worker(traffic: Traffic, directory: Path, ready: object, stop: Path) -> None:
    """Serve until the file ``stop`` exists. A file, not an ``Event``: setting a
    multiprocessing ``Event`` that a killed process was waiting on blocks forever."""

    def is_stopped() -> bool:
        return stop.exists()  # a stat() on a local file: fine for a test's event loop

    async def main() -> None:
        _, node = record(traffic, directory)
        node.write_snapshot()
        ready.set()  # type: ignore[attr-defined]
        snapshots = asyncio.create_task(node.run(interval_s=0.01))
        for _ in range(3000):
            if is_stopped():
                break
            await asyncio.sleep(0.01)
        snapshots.cancel()  # a clean exit: run() writes the final snapshot
        await asyncio.gather(snapshots, return_exceptions=True)

    asyncio.run(main())


def scrape(node: NodeMetrics) -> Samples:
    return parse(node.render()[1])


def test_one_scrape_sums_all_worker_processes(tmp_path: Path) -> None:
    directory = prepare_directory(tmp_path / "metrics")
    fork = multiprocessing.get_context("fork")
    plans = {
        "a": Traffic(ok=3, failed=1, in_flight=2, admitted=4),
        "b": Traffic(ok=5, failed=0, in_flight=1, admitted=5),
        "crashes": Traffic(ok=2, failed=2, in_flight=4, admitted=4),
    }
    stops = {name: tmp_path / f"stop-{name}" for name in plans}
    workers = {}
    for name, traffic in plans.items():
        ready = fork.Event()
        process = fork.Process(target=worker, args=(traffic, directory, ready, stops[name]))
        process.start()
        workers[name] = process
        assert ready.wait(30), f"worker {name} did not start"
    try:
        crashed = workers["crashes"]
        assert crashed.pid is not None
        time.sleep(0.05)  # let it run its snapshot loop: it crashes mid-service
        os.kill(crashed.pid, signal.SIGKILL)
        crashed.join(10)
        # The scraping worker serves traffic of its own.
        _, node = record(Traffic(ok=1, failed=0, in_flight=0, admitted=1), directory)

        samples = scrape(node)
        assert value(samples, "lockgate_requests_total", **OK) == 3 + 5 + 2 + 1
        assert value(samples, "lockgate_requests_total", **FAILED) == 1 + 0 + 2
        assert value(samples, "lockgate_request_duration_seconds_count", **SERIES) == 14
        assert value(samples, "lockgate_request_duration_seconds_sum", **SERIES) == (
            pytest.approx(11 * 0.5 + 3 * 0.1)
        )
        assert value(samples, "lockgate_request_duration_seconds_bucket", **SERIES, le="0.16") == 3
        assert (
            value(samples, "gen_ai_client_token_usage_sum", **SERIES, gen_ai_token_type="output")
            == 11 * 20
        )
        assert value(samples, "lockgate_admission_decisions_total", outcome="admitted") == 14
        # In flight: the live workers' (2 + 1); the crashed worker's 4 died with it.
        assert value(samples, "lockgate_requests_in_flight") == 3
        assert value(samples, "lockgate_worker_processes") == 3  # a, b and the scraper

        stops["a"].touch()
        workers["a"].join(10)
        assert workers["a"].exitcode == 0
        after = scrape(node)
        assert value(after, "lockgate_requests_total", **OK) == 11, "exits never lower totals"
        assert value(after, "lockgate_requests_in_flight") == 1
        assert value(after, "lockgate_worker_processes") == 2
        assert sorted(p.name.split("-")[0] for p in directory.iterdir()) == ["worker"] * 3
    finally:
        for name, process in workers.items():
            stops[name].touch()
            process.join(10)
            if process.exitcode is None:
                process.kill()
                process.join()


def test_a_new_run_starts_from_zero(tmp_path: Path) -> None:
    directory = prepare_directory(tmp_path)
    _, node = record(Traffic(ok=2, failed=0, in_flight=0, admitted=0), directory)
    node.write_snapshot(is_final=True)
    _, fresh = record(Traffic(ok=0, failed=0, in_flight=0, admitted=0), directory)
    assert value(scrape(fresh), "lockgate_requests_total", **OK) == 2
    prepare_directory(directory)
    assert value(scrape(fresh), "lockgate_requests_total", **OK) == 0


def test_unreadable_snapshots_are_skipped(tmp_path: Path) -> None:
    directory = prepare_directory(tmp_path)
    (directory / "worker-1-broken.json").write_bytes(b"{not json")
    _, node = record(Traffic(ok=1, failed=0, in_flight=0, admitted=0), directory)
    assert value(scrape(node), "lockgate_requests_total", **OK) == 1
