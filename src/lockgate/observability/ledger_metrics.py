"""Usage-ledger metrics, read from the journal's and the flusher's counters at scrape time.

The ledger is where billing comes from, so its backlog is an operational
signal: records journalled locally but not yet in the store are safe (they
survive a crash) but invisible to reports and budgets until flushed, and a
journal that keeps growing means the store is refusing or unreachable. Both
``Journal`` and ``LedgerFlusher`` already count what they do in plain
integers; reading them at scrape time costs the hot path nothing.

Two halves, exported by whichever process holds them: each worker appends to
its journal (``LedgerCollector``); the flushing happens in the worker itself
(tests, the demo) or, under ``lockgate serve``, in the ``lockgate-ledger``
process, which publishes ``FlusherCollector``'s figures as a node snapshot
(``flusher_snapshots``) so the admin port's ``/metrics`` still shows them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from lockgate.metering.flusher import FlushStats
from lockgate.observability.exposition import Family, from_metrics
from lockgate.observability.node import NodeMetrics


class JournalCounters(Protocol):
    """What ``metering.journal.Journal`` counts."""

    appended: int
    durable: int
    commit_failures: int
    sync_timeouts: int


class LedgerSource(Protocol):
    """What ``UsageLedger`` offers: its journal, and its flusher's stats (None: no flusher)."""

    @property
    def journal(self) -> JournalCounters: ...

    @property
    def stats(self) -> FlushStats | None: ...


class LedgerCollector:
    """A Prometheus collector over one worker's usage ledger (None: metering is off, and
    the journal's names are exported at zero, so dashboards and alerts never see gaps).

    The flusher's figures are exported here only when this process flushes its own
    journal; otherwise the flushing process exports them (``FlusherCollector``).
    """

    def __init__(self, ledger: LedgerSource | None) -> None:
        self._ledger = ledger

    def collect(self) -> Iterator[Metric]:
        ledger = self._ledger
        journal = ledger.journal if ledger is not None else None
        appended = journal.appended if journal is not None else 0
        durable = journal.durable if journal is not None else 0
        yield CounterMetricFamily(
            "lockgate_ledger_records_journaled",
            "Usage records handed to the local journal (one per settled request).",
            value=appended,
        )
        yield CounterMetricFamily(
            "lockgate_ledger_journal_commit_failures",
            "Failed group commits of the local journal (records then wait in memory).",
            value=journal.commit_failures if journal is not None else 0,
        )
        yield CounterMetricFamily(
            "lockgate_ledger_acknowledge_timeouts",
            "Responses ended without their usage record durable because journal commits "
            "failed or hung for metering.acknowledge_timeout_s.",
            value=journal.sync_timeouts if journal is not None else 0,
        )
        yield GaugeMetricFamily(
            "lockgate_ledger_unjournaled_records",
            "Records settled but not yet durable in the local journal (normally a few "
            "milliseconds' worth).",
            value=max(0, appended - durable),
        )
        stats = ledger.stats if ledger is not None else None
        if stats is not None or ledger is None:
            yield from flusher_families([stats] if stats is not None else [])


class FlusherCollector:
    """The flusher side, summed over the journals one process flushes (``lockgate-ledger``
    runs a ``LedgerFlusher`` per worker journal): ``stats`` returns their ``FlushStats``."""

    def __init__(self, stats: Callable[[], Iterable[FlushStats]]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        yield from flusher_families(list(self._stats()))

    def families(self) -> list[Family]:
        """For ``NodeMetrics`` (this collector is the flushing process's whole page)."""
        return list(from_metrics(self.collect()))


def flusher_families(stats: list[FlushStats]) -> Iterator[Metric]:
    """The flusher's figures over ``stats`` (several journals: summed; none: zero, and
    the store counted as available)."""
    yield CounterMetricFamily(
        "lockgate_ledger_records_flushed",
        "Usage records the store confirmed (new or already present) and the journal forgot.",
        value=sum(s.flushed for s in stats),
    )
    yield CounterMetricFamily(
        "lockgate_ledger_flush_failures",
        "Failed attempts to write a batch of usage records to the store.",
        value=sum(s.failures for s in stats),
    )
    yield CounterMetricFamily(
        "lockgate_ledger_records_quarantined",
        "Usage records the store refused for their values, set aside in the journal.",
        value=sum(s.quarantined for s in stats),
    )
    yield GaugeMetricFamily(
        "lockgate_ledger_pending_entries",
        "Journal entries (group commits) not yet flushed to the store, at the last look.",
        value=sum(s.pending_entries for s in stats),
    )
    yield GaugeMetricFamily(
        "lockgate_ledger_store_available",
        "1 when the flusher's last write to the store succeeded, 0 during an outage "
        "(one per flushing process).",
        value=1 if all(s.is_store_available for s in stats) else 0,
    )


async def flusher_snapshots(
    stats: Callable[[], Iterable[FlushStats]], directory: str | os.PathLike[str]
) -> None:
    """Publish the flushing process's figures into the node's snapshot directory every
    second, until cancelled (the ``lockgate-ledger`` process runs it beside its
    flushers; the admin port's ``/metrics`` merges them with the workers')."""
    await NodeMetrics(FlusherCollector(stats), directory).run()
