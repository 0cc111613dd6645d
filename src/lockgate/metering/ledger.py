"""``UsageLedger``: the metering settler — one usage record per request, exactly once.

    ledger = UsageLedger(journal_path, store.usage, PriceCatalogue(entries))
    await ledger.start()            # open the journal, re-send what a crash left behind
    ledger.settle(ctx)              # the pipeline, once per request: no await, no I/O
    await ledger.close()            # commit the journal, flush what the store will take

The hot path only copies two dozen fields out of the request context into a
list and queues it (``capture.capture``). Everything else happens off the event
loop: the journal thread group-commits the lists to the local journal
(``journal.py`` states the durability guarantee), and the flusher task completes
and prices them and copies them to the store (``flusher.py`` states why nothing
counts twice).

The flusher can also run in another process (the supervisor, a sidecar): build
the ledger with ``sink=None`` there and run ``LedgerFlusher`` on a
``JournalReader`` of the same file where the store is. That keeps its CPU (most
of metering's) off the worker's core.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

from lockgate.dataplane.context import RequestContext
from lockgate.metering.capture import capture, complete
from lockgate.metering.flusher import FlushStats, LedgerFlusher, UsageSink
from lockgate.metering.journal import Journal
from lockgate.metering.journal_reader import JournalReader
from lockgate.metering.pricing import PriceCatalogue
from lockgate.metering.record import UsageRecord

log = logging.getLogger(__name__)


class UsageLedger:
    """The settler that meters every request into the ledger.

    ``journal_path``: a SQLite file of this process's own (one per gateway worker,
    stable across restarts, e.g. ``<data_dir>/usage/journal-<worker>.db``); what a
    crash left in it is re-sent on ``start``. ``sink``: ``store.usage``; None when
    another process flushes this journal (``LedgerFlusher`` with a
    ``JournalReader`` on the same path). ``catalogue``: the prices.
    """

    def __init__(
        self,
        journal_path: Path,
        sink: UsageSink | None,
        catalogue: PriceCatalogue | None = None,
        *,
        commit_interval_s: float = 0.005,
        survives_power_loss: bool = True,
        flush_interval_s: float = 0.25,
        batch_size: int = 500,
        backoff_max_s: float = 30.0,
        close_timeout_s: float = 5.0,
    ) -> None:
        self._catalogue = catalogue if catalogue is not None else PriceCatalogue()
        self.journal = Journal(
            journal_path,
            commit_interval_s=commit_interval_s,
            survives_power_loss=survives_power_loss,
        )
        self._sink = sink
        self._flush_interval_s = flush_interval_s
        self._batch_size = batch_size
        self._backoff_max_s = backoff_max_s
        self._close_timeout_s = close_timeout_s
        self.flusher: LedgerFlusher | None = None
        self._task: asyncio.Task[None] | None = None

    def complete(self, record_id: str, captured: Any) -> UsageRecord:
        """A journalled request's record, priced by this ledger's catalogue."""
        return complete(record_id, captured, self._catalogue)

    def settle(self, ctx: RequestContext) -> None:
        """Queue the request's record for the journal; returns at once (see ``Journal``)."""
        self.journal.append(capture(ctx))

    async def start(self) -> None:
        """Open the journal and start flushing it, backlog first.

        Raises ``JournalBusy`` when another process holds the journal, ``OSError``
        or ``sqlite3.Error`` when it cannot be opened.
        """
        self.journal.open()
        if self._sink is None:
            return
        try:
            reader = await asyncio.to_thread(JournalReader, self.journal.path)
        except BaseException:
            await asyncio.to_thread(self.journal.close)
            raise
        self.flusher = LedgerFlusher(
            reader,
            self._sink,
            self.complete,
            batch_size=self._batch_size,
            interval_s=self._flush_interval_s,
            backoff_max_s=self._backoff_max_s,
        )
        self._task = asyncio.create_task(self.flusher.run(), name="usage-ledger-flusher")

    async def sync(self) -> None:
        """Return once every request settled so far is durable in the journal."""
        await self.journal.sync()

    async def flush(self) -> None:
        """Return once every request settled so far is in the store (tests, operator
        commands; waits out an outage, so bound it with ``asyncio.timeout``)."""
        await self.journal.sync()
        if self.flusher is None or self._task is None:
            raise RuntimeError("this ledger does not flush (no sink, or closed)")
        await self.flusher.wait_flushed()

    async def close(self) -> None:
        """Commit the journal, try (for ``close_timeout_s``) to flush it, stop.

        What the store does not take now stays in the journal for the next start.
        """
        await asyncio.to_thread(self.journal.close)
        if self.flusher is None or self._task is None:
            return  # no flusher, or already closed
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        if not await self.flusher.flush_pending(self._close_timeout_s):
            log.warning(
                "usage ledger: %d records stay in %s until the next start",
                await self.flusher.pending(),
                self.journal.path,
            )
        await asyncio.to_thread(self.flusher.close)

    @property
    def stats(self) -> FlushStats | None:
        """The flusher's counters (None without a flusher); the journal's are on ``journal``."""
        return None if self.flusher is None else self.flusher.stats
