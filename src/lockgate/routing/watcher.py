"""One owned background task per router concern that visits every watched pool on a timer.

Health checks and engine-metric scraping share this lifecycle: ``start()`` inside
the running loop, ``close()`` (or ``await stop()``) at shutdown. Everything runs
under one task and one ``TaskGroup``, so cancelling that task stops it all;
nothing is fire-and-forget. Subclasses say which pools they watch and what one
pool's loop does (``_watch``).
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections.abc import Sequence

from lockgate.routing.pool import Pool


class PoolWatcher(ABC):
    def __init__(self, watched: Sequence[Pool]) -> None:
        self._watched = list(watched)
        self._task: asyncio.Task[None] | None = None

    @property
    def is_running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Begin (no-op when no pool is watched, or already started)."""
        if self._watched and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def close(self) -> None:
        """Stop; the task ends at its next step (callers that can, ``await stop()``)."""
        if self._task is not None:
            self._task.cancel()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for pool in self._watched:
                group.create_task(self._watch(pool))

    @abstractmethod
    async def _watch(self, pool: Pool) -> None:
        """One pool's loop, until cancelled."""
