"""The SQLite log: a reader that fell behind flushes; workers starting together all connect."""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from lockgate.invalidation import SqliteBus
from tests.invalidation.support import Recorder


async def test_sqlite_reader_that_fell_behind_the_retained_log_flushes(tmp_path: Path) -> None:
    path = tmp_path / "invalidation.sqlite3"
    publisher = SqliteBus(path, keep_messages=5)
    subscriber = SqliteBus(path, keep_messages=5)
    flushed, received = Recorder(), Recorder()
    subscriber.on_reconnect(flushed)
    subscriber.subscribe("keys", received)
    try:
        await publisher.start()
        await subscriber.start()
        # Far more than keep_messages within one poll interval: the reader must see a hole.
        for index in range(40):
            await publisher.publish("keys", f"burst-{index}")

        await flushed.wait_for(1)
        await received.wait_for(5)
        assert received.keys[-5:] == [f"burst-{index}" for index in range(35, 40)]
        assert len(received.keys) < 40
    finally:
        await publisher.close()
        await subscriber.close()


@pytest.mark.parametrize("round_", range(4))
async def test_sqlite_workers_starting_together_on_a_new_file_all_hear_each_other(
    tmp_path: Path, round_: int
) -> None:
    """Several rounds: the first switch of a new file to WAL collides only sometimes."""
    path = tmp_path / "fresh" / "invalidation.sqlite3"
    buses = [SqliteBus(path) for _ in range(8)]
    recorders = [Recorder() for _ in buses]
    for bus, recorder in zip(buses, recorders, strict=True):
        bus.subscribe("keys", recorder)
    try:
        await asyncio.gather(*(bus.start() for bus in buses))
        await buses[0].publish("keys", "k1")
        for recorder in recorders:
            await recorder.wait_for(1)
    finally:
        for bus in buses:
            await bus.close()


async def test_sqlite_log_keeps_only_the_newest_messages(tmp_path: Path) -> None:
    path = tmp_path / "invalidation.sqlite3"
    bus = SqliteBus(path, keep_messages=50)
    try:
        for index in range(300):
            await bus.publish("keys", f"k{index}")
    finally:
        await bus.close()

    def read_log() -> tuple[int, int, int]:
        with closing(sqlite3.connect(path)) as connection:
            cursor = connection.execute("SELECT count(*), min(seq), max(seq) FROM invalidation")
            count, first, last = cursor.fetchone()
            return int(count), int(first), int(last)

    assert await asyncio.to_thread(read_log) == (50, 251, 300)
