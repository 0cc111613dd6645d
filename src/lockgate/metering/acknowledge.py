"""What the data plane awaits before a response's end: its usage record durable, but
not forever.

``metering.acknowledge: durable`` holds each response's last bytes until the usage
journal's group commit that holds its record has returned (docs/metering.md). A
journal whose commits fail (disk full, I/O errors) retries them for as long as it
takes, and the records wait in memory; the responses must not wait with them. So a
watchdog, once per ``check_interval_s``, ends every wait older than ``max_wait_s``:
those responses end without a durable record (the record is still queued, and is
written once the disk recovers, unless the process dies first). Each is counted
(``Journal.sync_timeouts``, the ledger metrics) and logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from lockgate.metering.journal import Journal

log = logging.getLogger(__name__)


class Acknowledgement:
    """The watchdog over one journal's ``sync`` waits (also awaitable itself, as the data
    plane's acknowledgement); ``start`` in the worker's loop, ``close`` at shutdown."""

    def __init__(
        self, journal: Journal, *, max_wait_s: float = 5.0, check_interval_s: float = 1.0
    ) -> None:
        self._journal = journal
        self._max_wait_s = max_wait_s
        self._check_interval_s = check_interval_s
        self._task: asyncio.Task[None] | None = None

    async def __call__(self) -> None:
        await self._journal.sync()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._watch(), name="usage-acknowledgement-watchdog"
            )

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._check_interval_s)
            released = self._journal.release_overdue(loop.time() - self._max_wait_s)
            if released:
                log.error(
                    "usage journal %s: commits are failing or stuck; %d response(s) ended "
                    "after %.1f s without a durable usage record (they stay queued)",
                    self._journal.path,
                    released,
                    self._max_wait_s,
                )
