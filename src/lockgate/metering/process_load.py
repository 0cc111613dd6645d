"""How busy the serving process is: what decides whether a journal commit waits for a group.

A commit costs an fsync; while the process has CPU to spare that is cheaper than
making held responses wait for a group to gather (see ``journal.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

# The process is busy, and commits wait for a group, once it uses this share of a core.
BUSY_SHARE: Final = 0.75
LOAD_WINDOW_S: Final = 0.05  # how often the load is measured again


class ProcessLoad:
    """Whether the process used ``BUSY_SHARE`` of a core or more lately (one thread only).

    Measured over windows of at least ``LOAD_WINDOW_S``; a window that saw no check
    (an idle spell) ends at the next check, so a burst after a quiet minute starts as
    "not busy" and is re-judged within one window.
    """

    __slots__ = ("_cpu_clock", "_is_busy", "_window_cpu", "_window_start")

    def __init__(self, cpu_clock: Callable[[], float]) -> None:
        self._cpu_clock = cpu_clock
        self._window_start = time.monotonic()
        self._window_cpu = cpu_clock()
        self._is_busy = False

    def is_busy(self, now: float) -> bool:
        elapsed = now - self._window_start
        if elapsed >= LOAD_WINDOW_S:
            cpu = self._cpu_clock()
            self._is_busy = (cpu - self._window_cpu) >= BUSY_SHARE * elapsed
            self._window_start, self._window_cpu = now, cpu
        return self._is_busy
