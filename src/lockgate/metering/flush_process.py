"""The ledger flusher as a process of its own, beside the serving workers.

Flushing is most of metering's CPU: reading journal entries back, completing and
pricing records, inserting them through the database driver. In a serving
process that work (and its threads) competes with the event loop for the GIL;
measured on the reference VM it cost about a fifth of a worker's throughput.
``lockgate serve`` therefore runs one flusher process per machine. Workers only
append to their journals (``UsageLedger`` with ``sink=None``); this process
finds every ``journal-*.db`` in the usage directory and runs a ``LedgerFlusher``
on each, picking up journals that appear later (a worker started afterwards).

Nothing about exactly-once changes: the journal is still the only durable
buffer and the store's ``ON CONFLICT (record_id)`` still drops re-sends, so the
process can die at any moment and a restarted one resumes where the journal
says. One flusher process per data directory: it holds ``flusher.lock`` (an
``flock`` the kernel releases when it dies), so a second gateway started on the
same directory is refused instead of flushing the same journals twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import multiprocessing
import multiprocessing.process
import os
import signal
import sys
import time
from pathlib import Path
from typing import IO, Any

from lockgate.config import RuntimeConfig
from lockgate.invalidation.build import build_bus
from lockgate.metering.capture import complete
from lockgate.metering.flusher import LedgerFlusher, UsageSink
from lockgate.metering.journal import JournalBusy
from lockgate.metering.journal_reader import JournalReader
from lockgate.metering.live_prices import TOPIC_PRICES, LivePriceCatalogue
from lockgate.metering.pricing import PriceCatalogue
from lockgate.metering.record import UsageRecord
from lockgate.metering.wiring import ledger_sink
from lockgate.store.database import default_url
from lockgate.store.store import Store

log = logging.getLogger(__name__)

JOURNAL_GLOB = "journal-*.db"
_LOCK_NAME = "flusher.lock"


def usage_directory(config: RuntimeConfig) -> Path:
    """Where the workers' journals live: ``<data_dir>/usage``."""
    return Path(config.server.data_dir) / "usage"


def journal_path(config: RuntimeConfig, worker_index: int) -> Path:
    """Worker ``worker_index``'s journal (stable across restarts of that worker)."""
    return usage_directory(config) / f"journal-{worker_index}.db"


def lock_usage_directory(config: RuntimeConfig) -> IO[bytes]:
    """Take the data directory's flusher lock; keep the returned file open while serving.

    Raises ``JournalBusy`` when another gateway holds it. Taken by ``serve`` before
    it forks: the lock lasts while any of its processes lives (children inherit it).
    """
    directory = usage_directory(config)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    lock_file = open(directory / _LOCK_NAME, "ab")  # noqa: SIM115 - held for the process's life
    try:
        fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as error:
        lock_file.close()
        raise JournalBusy(f"{directory} is in use by another process") from error
    return lock_file


class JournalFlushers:
    """One ``LedgerFlusher`` task per journal file in the usage directory.

    ``run`` rescans the directory every ``rescan_s``; ``close`` stops the tasks
    and gives each journal ``close_timeout_s`` to empty into the store.
    """

    def __init__(
        self,
        directory: Path,
        sink: UsageSink,
        catalogue: PriceCatalogue,
        *,
        rescan_s: float = 1.0,
        flush_interval_s: float = 0.25,
        batch_size: int = 1000,
        close_timeout_s: float = 10.0,
    ) -> None:
        self._directory = directory
        self._sink = sink
        self._catalogue = catalogue
        self._rescan_s = rescan_s
        self._flush_interval_s = flush_interval_s
        self._batch_size = batch_size
        self._close_timeout_s = close_timeout_s
        self.flushers: dict[Path, tuple[LedgerFlusher, asyncio.Task[None]]] = {}

    def _complete(self, record_id: str, captured: Any) -> UsageRecord:
        return complete(record_id, captured, self._catalogue)

    async def scan(self) -> None:
        """Start flushing every journal not flushed yet."""
        for path in sorted(self._directory.glob(JOURNAL_GLOB)):
            if path in self.flushers:
                continue
            try:
                reader = await asyncio.to_thread(JournalReader, path)
            except Exception:  # sqlite3.Error, OSError: a broken file must not stop the rest
                log.exception("usage ledger: cannot open journal %s; retrying", path)
                continue
            flusher = LedgerFlusher(
                reader,
                self._sink,
                self._complete,
                batch_size=self._batch_size,
                interval_s=self._flush_interval_s,
            )
            task = asyncio.create_task(flusher.run(), name=f"usage-flusher-{path.stem}")
            self.flushers[path] = (flusher, task)

    async def run(self) -> None:
        while True:
            await self.scan()
            await asyncio.sleep(self._rescan_s)

    async def close(self) -> None:
        for flusher, task in self.flushers.values():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            if not await flusher.flush_pending(self._close_timeout_s):
                log.warning("usage ledger: records stay in the journal until the next start")
            await asyncio.to_thread(flusher.close)
        self.flushers.clear()


async def flush_journals(config: RuntimeConfig, stop: asyncio.Event) -> None:
    """Flush every worker journal of ``config``'s data directory until ``stop``.

    Prices as the workers would: config prices plus those added through the admin API,
    reloaded when the invalidation bus announces a new one. Records go to the store
    through ``ledger_sink`` (queued for the CloudEvents push when that is configured).
    """
    store = await Store.open(config.database_url or default_url(config.server.data_dir))
    bus = build_bus(config.redis_url, config.database_url, config.server.data_dir)
    catalogue = LivePriceCatalogue(config.metering.prices, store.usage.prices)
    bus.subscribe(TOPIC_PRICES, catalogue.invalidate)
    bus.on_reconnect(catalogue.invalidate)
    try:
        await bus.start()
        await catalogue.start()
    except BaseException:
        await bus.close()
        await store.close()
        raise
    flushers = JournalFlushers(usage_directory(config), ledger_sink(config, store), catalogue)
    scanning = asyncio.create_task(flushers.run(), name="usage-journal-scan")
    # Backlog and store reachability reach the admin port's /metrics as a node snapshot.
    from lockgate.observability.ledger_metrics import flusher_snapshots
    from lockgate.startup import metrics_directory

    directory = metrics_directory(config)
    snapshots = None
    if directory is not None:
        stats = lambda: [flusher.stats for flusher, _ in flushers.flushers.values()]  # noqa: E731
        snapshots = asyncio.create_task(flusher_snapshots(stats, directory))
    try:
        await stop.wait()
    finally:
        scanning.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await scanning
        if snapshots is not None:  # the workers have stopped: nobody scrapes any more
            snapshots.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await snapshots
        await flushers.scan()  # a journal a worker created just before stopping
        await flushers.close()
        await catalogue.close()
        await bus.close()
        await store.close()


class FlusherProcess:
    """The flusher's child process: started before the workers, restarted if it dies,
    stopped after them (so it flushes what their final journal commits hold)."""

    def __init__(self, config: RuntimeConfig) -> None:
        self._config = config
        self._context = multiprocessing.get_context("fork")
        self._process: multiprocessing.process.BaseProcess | None = None
        self._started_at = 0.0
        # How ``stop`` asks it to finish (besides SIGTERM, which a process that is still
        # starting up could miss): it looks several times a second.
        self._stopping = self._context.Event()

    def start(self) -> None:
        self._process = self._context.Process(
            target=_flusher_main, args=(self._config, self._stopping), name="lockgate-ledger"
        )
        self._process.start()
        self._started_at = time.monotonic()

    def check(self) -> None:
        """Restart the process if it died (no more than once a second)."""
        process = self._process
        if process is None or process.exitcode is None:
            return
        if time.monotonic() - self._started_at < 1.0:
            return
        log.error("usage ledger flusher exited with %s; restarting it", process.exitcode)
        self.start()

    def restart(self, config: RuntimeConfig) -> None:
        """Stop it (with its final flush) and start it on ``config``: a reload changed the
        metering settings (prices). The journals hold whatever arrives in between."""
        self.stop()
        self._config = config
        self._stopping = self._context.Event()
        self.start()

    def stop(self, timeout_s: float = 3.0) -> None:
        """Ask it to stop, wait up to ``timeout_s`` for its final flush, then SIGKILL it.

        Short on purpose: a shutdown must not wait on the store, and nothing is lost by
        cutting the final flush short: the journals keep every record for the next start.
        """
        process = self._process
        if process is None:
            return
        if process.exitcode is None:
            self._stopping.set()
            process.terminate()
            process.join(timeout_s)
            if process.exitcode is None:
                log.warning("usage ledger flusher still flushing; the journals keep the rest")
                process.kill()
                process.join()
        self._process = None


PROCESS_NAME = "lockgate-ledger"  # what ps and top show for it (Linux)


def _flusher_main(config: RuntimeConfig, stopping: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops it with SIGTERM
    with contextlib.suppress(OSError):
        Path("/proc/self/comm").write_text(PROCESS_NAME)
    parent = os.getppid()

    async def orphaned(stop: asyncio.Event) -> None:
        # Stop, flushing first, when asked (``stopping``) or when the parent is gone: a
        # parent killed before it could ask (SIGKILL) must not leave a flusher behind.
        while os.getppid() == parent and not stopping.is_set():  # noqa: ASYNC110
            await asyncio.sleep(0.2)
        stop.set()

    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        watcher = asyncio.create_task(orphaned(stop))
        try:
            await flush_journals(config, stop)
        finally:
            watcher.cancel()

    try:
        asyncio.run(main())
    except Exception as exc:  # StoreError, a bus that cannot start: one line, not a trace
        # Nothing is lost: the journals keep every record; ``serve`` starts it again.
        log.error("usage ledger flusher stopped: %s", exc)
        sys.exit(1)
