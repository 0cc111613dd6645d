"""A journal whose commits hang must not hold every response: the acknowledgement's
wait is bounded, counted and logged, and the record is still written afterwards."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from typing import Any

import pytest

from lockgate.metering.acknowledge import Acknowledgement
from lockgate.metering.journal import Journal
from lockgate.metering.journal_reader import JournalReader


async def test_a_hung_commit_releases_waiters_after_the_timeout_and_commits_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    disk_back = threading.Event()
    real_commit = Journal._commit

    def hung_commit(self: Journal, *args: Any, **kwargs: Any) -> None:
        disk_back.wait(10)  # a disk that does not answer (NFS gone, a dying device)
        real_commit(self, *args, **kwargs)

    monkeypatch.setattr(Journal, "_commit", hung_commit)
    journal = Journal(tmp_path / "journal.db", commit_interval_s=0.001)
    journal.open()
    acknowledge = Acknowledgement(journal, max_wait_s=0.2, check_interval_s=0.05)
    acknowledge.start()
    try:
        journal.append(["r-1"])
        started = asyncio.get_running_loop().time()
        with caplog.at_level(logging.ERROR, logger="lockgate.metering.acknowledge"):
            await asyncio.wait_for(acknowledge(), 5)
        waited = asyncio.get_running_loop().time() - started
        assert 0.2 <= waited < 2.0
        assert journal.sync_timeouts == 1
        assert journal.durable == 0  # released, not durable
        assert "without a durable usage record" in caplog.text
        disk_back.set()  # the disk recovers: the queued record is written after all
        await asyncio.wait_for(journal.sync(), 5)
        assert journal.durable == 1
    finally:
        disk_back.set()
        await acknowledge.close()
        await asyncio.to_thread(journal.close)
    reader = JournalReader(tmp_path / "journal.db")
    try:
        assert reader.count() == 1
    finally:
        reader.close()


async def test_a_healthy_journal_is_waited_for_and_nothing_is_counted(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.db", commit_interval_s=0.001)
    journal.open()
    acknowledge = Acknowledgement(journal, max_wait_s=0.2, check_interval_s=0.05)
    acknowledge.start()
    try:
        for n in range(50):
            journal.append([f"r-{n}"])
            await acknowledge()
        await asyncio.sleep(0.3)  # a few watchdog rounds with nothing overdue
        assert (journal.durable, journal.sync_timeouts) == (50, 0)
    finally:
        await acknowledge.close()
        await asyncio.to_thread(journal.close)
