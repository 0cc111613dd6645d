"""The flusher: copies journal entries to the store in batches, exactly once.

Order of events for one batch, and why it cannot double-count:

1. read the oldest journal entries, about ``batch_size`` records' worth, and
   complete each captured request into its ``UsageRecord`` (priced at its own
   time; ``capture.complete``);
2. insert them into the store in one transaction with ``ON CONFLICT (record_id)
   DO NOTHING`` — a record the store already has (sent before a crash, whose
   removal from the journal was then lost) is skipped, not added again;
3. only after that commit, delete those entries from the journal.

A crash between 2 and 3 re-sends the batch at the next start; step 2 makes
that harmless. A crash before 2 commits sends it for the first time then.

When the store is unreachable the batch stays in the journal, the flusher waits
(exponential back-off, capped at ``backoff_max_s``) and tries again for as long
as it takes: records are never dropped for an outage. It logs the first failure
and then at most once a minute, and when the store is back. A record the store
refuses as *invalid* (a schema rule it breaks, which no retry will fix) would
block everything behind it forever; such a record is isolated (the batch is
retried one record at a time) and kept in the journal's quarantine table,
logged and counted, never silently dropped. So is a captured request that
cannot be completed (a bug, or a journal written by an incompatible version).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import orjson

from lockgate.metering.journal import JournalEntry
from lockgate.metering.journal_reader import JournalReader
from lockgate.metering.record import UsageRecord
from lockgate.store.errors import Invalid, StoreError

log = logging.getLogger(__name__)

R = TypeVar("R")
_LOG_EVERY_S = 60.0

# (record id, captured item) → the record; raises ValueError/TypeError if it cannot.
Completer = Callable[[str, Any], UsageRecord]
# What a sink raises for records no retry will get in: the values, not the store.
_REFUSED = (Invalid, TypeError, ValueError, OverflowError)


class UsageSink(Protocol):
    """Where flushed records go: ``store.usage`` (``repositories.usage.UsageRecords``)."""

    async def insert_many(self, records: Sequence[UsageRecord]) -> int:
        """Insert the records not already present, in one transaction; return how many
        were new. Raises ``StoreError`` (``StoreUnavailable``, ``Invalid``, …)."""
        ...


@dataclass(slots=True)
class FlushStats:
    """Counters for metrics and tests; monotonic except the two gauges at the end."""

    flushed: int = 0  # records the store confirmed and the journal forgot
    inserted: int = 0  # of which new to the store
    duplicates: int = 0  # of which the store already had (a re-send)
    failures: int = 0  # failed store attempts (each batch retry counts)
    quarantined: int = 0
    pending_entries: int = 0  # gauge: journal entries (group commits) left at the last look
    is_store_available: bool = True  # gauge: the last attempt succeeded


class LedgerFlusher:
    """Moves a journal's entries into a ``UsageSink``; one per journal file.

    ``run`` is a long-lived task (cancel it to stop); ``flush_pending`` flushes
    until the journal is empty. Journal I/O runs on a private one-thread
    executor, so the event loop never waits on SQLite.
    """

    def __init__(
        self,
        reader: JournalReader,
        sink: UsageSink,
        complete: Completer,
        *,
        batch_size: int = 500,
        interval_s: float = 0.25,
        backoff_initial_s: float = 0.1,
        backoff_max_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._reader = reader
        self._sink = sink
        self._complete = complete
        self._batch_size = batch_size
        self._interval_s = interval_s
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._clock = clock
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="usage-flusher")
        self._kick = asyncio.Event()
        # Reads of the journal started, and the latest one that found it empty.
        self._reads = 0
        self._empty_read = 0
        self._emptied = asyncio.Event()
        self._outage_since: float | None = None
        self._last_log = 0.0
        self.stats = FlushStats()

    def kick(self) -> None:
        """Flush now rather than at the next interval (e.g. after a large burst)."""
        self._kick.set()

    async def wait_flushed(self) -> None:
        """Return once ``run`` has found the journal empty after this call: every entry
        committed before the call is then in the store. Waits out outages; bound it
        with ``asyncio.timeout`` if needed."""
        # A read that started before this call may come back empty after it, though
        # entries committed since are waiting: only a read started later counts.
        wanted = self._reads + 1
        self.kick()
        while self._empty_read < wanted:
            self._emptied.clear()
            await self._emptied.wait()

    async def run(self) -> None:
        """Flush forever: a batch when there is one, else wait ``interval_s`` or a kick."""
        delay_s = self._backoff_initial_s
        while True:
            try:
                moved = await self.flush_once()
            except Exception as error:  # StoreError; anything else is a bug, but retry too
                if not isinstance(error, StoreError):
                    log.exception("usage ledger: flushing failed unexpectedly")
                self._note_failure(error)
                # Full jitter, so replicas that lost the database together do not
                # all come back in the same instant.
                await asyncio.sleep(random.uniform(0, delay_s))  # noqa: S311 - not crypto
                delay_s = min(delay_s * 2, self._backoff_max_s)
                continue
            delay_s = self._backoff_initial_s
            if moved < self._batch_size:
                self._kick.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._kick.wait(), self._interval_s)

    async def flush_once(self) -> int:
        """Flush at most one batch; return how many records left the journal.

        Raises ``StoreError`` when the store did not take the batch (the entries
        stay in the journal).
        """
        self._reads += 1
        read = self._reads
        entries = await self._io(self._reader.pending, self._batch_size)
        if not entries:
            self.stats.pending_entries = 0
            self._empty_read = max(self._empty_read, read)
            self._emptied.set()
            return 0
        ids, records = await self._records(entries)
        try:
            inserted = await self._sink.insert_many(records) if records else 0
        except _REFUSED:
            inserted = await self._isolate_invalid(ids, records)
        except StoreError:
            self.stats.failures += 1
            self.stats.is_store_available = False
            raise
        await self._io(self._reader.mark_flushed, entries[-1].seq)
        flushed = sum(len(e.items) for e in entries)
        self._note_success(flushed, inserted)
        self.stats.pending_entries = await self._io(self._reader.entries)
        return flushed

    async def flush_pending(self, timeout_s: float) -> bool:
        """Flush until the journal is empty or ``timeout_s`` passed; True if empty.

        Gives up at the first store error (a shutdown should not wait out an
        outage: the entries stay in the journal for the next start).
        """
        deadline = self._clock() + timeout_s
        while self._clock() < deadline:
            try:
                if await self.flush_once() == 0:
                    return True
            except StoreError as error:
                self._note_failure(error)
                return False
        return False

    async def pending(self) -> int:
        """Records in the journal that the store may not have yet."""
        return await self._io(self._reader.count)

    def close(self) -> None:
        """Release the reader's connection and executor (after ``run`` was cancelled)."""
        self._executor.submit(self._reader.close).result()
        self._executor.shutdown(wait=True)

    async def _records(
        self, entries: Sequence[JournalEntry]
    ) -> tuple[list[str], list[UsageRecord]]:
        """The entries' records; items that cannot be completed go to quarantine."""
        ids: list[str] = []
        records: list[UsageRecord] = []
        complete = self._complete
        for entry in entries:
            for record_id, item in zip(entry.record_ids, entry.items, strict=True):
                try:
                    records.append(complete(record_id, item))
                except (ValueError, TypeError) as error:
                    await self._quarantine(record_id, item, f"cannot be completed: {error!r}")
                    continue
                ids.append(record_id)
        return ids, records

    async def _quarantine(self, record_id: str, item: Any, reason: str) -> None:
        log.error(
            "usage record %s cannot be stored (%s): quarantined in %s",
            record_id,
            reason,
            self._reader.path,
        )
        await self._io(self._reader.quarantine, record_id, orjson.dumps(item), reason)
        self.stats.quarantined += 1

    async def _isolate_invalid(self, ids: Sequence[str], records: Sequence[UsageRecord]) -> int:
        inserted = 0
        for record_id, record in zip(ids, records, strict=True):
            try:
                inserted += await self._sink.insert_many([record])
            except _REFUSED as error:
                await self._quarantine(
                    record_id, record.to_json(), f"refused by the store: {error}"
                )
        return inserted

    def _note_success(self, flushed: int, inserted: int) -> None:
        stats = self.stats
        stats.flushed += flushed
        stats.inserted += inserted
        stats.duplicates += flushed - inserted
        stats.is_store_available = True
        if self._outage_since is not None:
            log.warning(
                "usage ledger: the store is back after %.1f s; flushing the backlog",
                self._clock() - self._outage_since,
            )
            self._outage_since = None

    def _note_failure(self, error: Exception) -> None:
        now = self._clock()
        if self._outage_since is None:
            self._outage_since = now
            self._last_log = now
            log.warning(
                "usage ledger: the store is unavailable (%s); records stay in the journal %s "
                "and are retried",
                error,
                self._reader.path,
            )
        elif now - self._last_log >= _LOG_EVERY_S:
            self._last_log = now
            log.warning(
                "usage ledger: the store is still unavailable after %.0f s (%s)",
                now - self._outage_since,
                error,
            )

    async def _io(self, call: Callable[..., R], *args: object) -> R:
        return await asyncio.get_running_loop().run_in_executor(self._executor, call, *args)
