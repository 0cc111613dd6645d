"""Ledger metrics: each half exported by the process that holds it, summed as a node would.

A worker that only journals (``lockgate serve``: the ``lockgate-ledger`` process
flushes) must not claim flusher figures it does not have: a worker's "store
available: 1" next to the flusher's 0 would hide an outage in the node's sum.
"""

from __future__ import annotations

from pathlib import Path

from lockgate.http.server import HttpRequest
from lockgate.metering.flusher import FlushStats
from lockgate.metering.ledger import UsageLedger
from lockgate.observability.ledger_metrics import FlusherCollector, LedgerCollector
from lockgate.observability.metrics import GatewayMetrics
from lockgate.observability.node import NodeMetrics, prepare_directory, render
from tests.observability.support import context, parse, value


async def test_a_journal_only_worker_exports_the_journal_half(tmp_path: Path) -> None:
    ledger = UsageLedger(tmp_path / "journal-0.db", None)  # flushed by another process
    await ledger.start()
    try:
        for _ in range(3):
            ledger.settle(context(http=HttpRequest(b"POST", b"/v1/chat/completions", {}, b"{}")))
        await ledger.sync()
        metrics = GatewayMetrics()
        metrics.add_collector(LedgerCollector(ledger))
        page = render(metrics)[1].decode()
    finally:
        await ledger.close()
    samples = parse(page.encode())
    assert value(samples, "lockgate_ledger_records_journaled_total") == 3
    assert value(samples, "lockgate_ledger_unjournaled_records") == 0
    assert "lockgate_ledger_store_available" not in page
    assert "lockgate_ledger_pending_entries" not in page


def test_without_metering_the_names_exist_at_rest() -> None:
    metrics = GatewayMetrics()
    metrics.add_collector(LedgerCollector(None))
    samples = parse(render(metrics)[1])
    assert value(samples, "lockgate_ledger_records_journaled_total") == 0
    assert value(samples, "lockgate_ledger_store_available") == 1
    assert value(samples, "lockgate_ledger_pending_entries") == 0


def test_the_flusher_process_figures_reach_the_workers_page(tmp_path: Path) -> None:
    directory = prepare_directory(tmp_path / "metrics")
    ok = FlushStats(flushed=40, failures=1, pending_entries=2)
    down = FlushStats(flushed=2, failures=7, pending_entries=30, is_store_available=False)
    flusher = NodeMetrics(FlusherCollector(lambda: [ok, down]), directory)
    flusher.write_snapshot()  # what flusher_snapshots does every second
    worker = GatewayMetrics()
    page = NodeMetrics(worker, directory).render()[1]
    samples = parse(page)
    assert value(samples, "lockgate_ledger_records_flushed_total") == 42
    assert value(samples, "lockgate_ledger_flush_failures_total") == 8
    assert value(samples, "lockgate_ledger_pending_entries") == 32
    assert value(samples, "lockgate_ledger_store_available") == 0  # one journal cannot flush
    assert value(samples, "lockgate_worker_processes") == 1  # the flusher is not a worker
