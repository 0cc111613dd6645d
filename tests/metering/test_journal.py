"""The journal: group commits, what ``sync`` promises, stable record ids, failures counted."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

from lockgate.metering.journal import MAX_ITEMS_PER_ENTRY, Journal, record_id
from lockgate.metering.journal_reader import JournalReader


async def test_sync_returns_once_everything_appended_is_on_disk(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.db", commit_interval_s=0.02)
    journal.open()
    try:
        for i in range(2_500):
            journal.append(["item", i])
        assert journal.appended == 2_500
        await journal.sync()
        assert journal.durable == 2_500
        # Another connection (another process, after a crash) sees all of them, in order,
        # grouped: one entry per group commit, at most MAX_ITEMS_PER_ENTRY items each.
        reader = JournalReader(tmp_path / "j.db")
        entries = reader.pending(10_000)
        assert [item for e in entries for item in e.items] == [["item", i] for i in range(2_500)]
        assert max(len(e.items) for e in entries) <= MAX_ITEMS_PER_ENTRY
        assert len(entries) < 100  # grouped, not one commit per item
        first = entries[0]
        assert first.record_ids[1] == record_id(journal.journal_id, first.seq, 1)
        assert reader.count() == 2_500
        reader.mark_flushed(first.seq)
        assert reader.count() == 2_500 - len(first.items)
        reader.close()
    finally:
        journal.close()


async def test_pending_reads_whole_entries_up_to_a_budget(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.db")
    journal.open()
    for group in range(3):
        for i in range(10):
            journal.append([group, i])
        await journal.sync()  # one group commit (one entry) each
    journal.close()
    reader = JournalReader(tmp_path / "j.db")
    assert [len(e.items) for e in reader.pending(25)] == [10, 10]
    assert [len(e.items) for e in reader.pending(5)] == [10]  # at least one, whole
    reader.close()


async def test_record_ids_survive_a_reopen_and_are_never_reused(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    first = Journal(path)
    first.open()
    first.append(["a"])
    await first.sync()
    first.close()
    reader = JournalReader(path)
    [a] = reader.pending(10)
    reader.mark_flushed(a.seq)  # flushed: gone from the journal
    second = Journal(path)
    second.open()
    second.append(["b"])
    await second.sync()
    second.close()
    [b] = reader.pending(10)
    assert second.journal_id == first.journal_id
    assert a.record_ids == [f"ur_{first.journal_id}_{a.seq}_0"]
    assert b.seq > a.seq  # AUTOINCREMENT: a flushed entry's ids are never handed out again
    assert reader.pending(10) == [b]  # read twice, same ids: a re-send is recognisable
    reader.close()


async def test_an_item_that_cannot_be_encoded_is_counted_and_the_rest_committed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    journal = Journal(tmp_path / "j.db")
    journal.open()
    with caplog.at_level(logging.ERROR):
        for item in (["a"], [object()], ["b"]):
            journal.append(item)
        await journal.sync()
    journal.close()
    assert journal.encode_failures == 1
    assert "could not be encoded" in caplog.text
    reader = JournalReader(tmp_path / "j.db")
    assert [e.items for e in reader.pending(10)] == [[["a"], ["b"]]]
    reader.close()


async def test_items_appended_before_open_are_kept_and_after_close_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    journal = Journal(tmp_path / "j.db")
    journal.append(["early"])  # a request settled while the ledger was still starting
    journal.open()
    await journal.sync()
    journal.close()
    with caplog.at_level(logging.ERROR):
        journal.append(["late"])
    assert journal.dropped_after_close == 1
    reader = JournalReader(tmp_path / "j.db")
    assert [e.items for e in reader.pending(10)] == [[["early"]]]
    reader.close()


async def _sequential_syncs(journal: Journal, count: int) -> float:
    """Seconds for ``count`` append-then-sync rounds: a client that waits for each answer."""
    started = time.monotonic()
    for i in range(count):
        journal.append(["item", i])
        await journal.sync()
    return time.monotonic() - started


async def test_an_idle_process_commits_at_once_instead_of_waiting_for_a_group(
    tmp_path: Path,
) -> None:
    # The process reports no CPU used: waiting could gather nothing (the only request is
    # the one held for the commit), so no round waits for the long interval.
    journal = Journal(tmp_path / "j.db", commit_interval_s=0.5, cpu_clock=lambda: 0.0)
    journal.open()
    try:
        await asyncio.sleep(0.06)  # past the first load window
        assert await _sequential_syncs(journal, 6) < 1.0  # waiting would take 2.5 s
        assert journal.durable == 6
    finally:
        journal.close()


async def test_a_busy_process_commits_at_most_once_per_interval(tmp_path: Path) -> None:
    # CPU time advancing as fast as the wall clock: a core's worth, so commits group.
    journal = Journal(tmp_path / "j.db", commit_interval_s=0.2, cpu_clock=time.monotonic)
    journal.open()
    try:
        await asyncio.sleep(0.06)
        await _sequential_syncs(journal, 1)  # no commit before it: this one is at once
        assert await _sequential_syncs(journal, 4) >= 0.75  # four waits of ~0.2 s each
    finally:
        journal.close()
