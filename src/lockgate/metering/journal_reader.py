"""The flusher's side of a usage journal (``journal.py``): read what is pending, forget
what the store has, keep what it refuses.

Readers need no lock: SQLite serialises the reader's deletes against the
appender's commits. Losing a delete (the process dies after the store's commit)
only means a re-send, which the store drops as a duplicate by record id.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import orjson

from lockgate.metering.journal import JournalEntry, connect, journal_id, record_id

log = logging.getLogger(__name__)


class JournalReader:
    """The flusher's side of a journal: read pending entries, remove flushed ones.

    Not thread-safe: use it from one thread at a time (the flusher's executor).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn = connect(path, is_durable=False)
        self.journal_id = journal_id(self._conn)

    def pending(self, max_items: int) -> list[JournalEntry]:
        """The oldest entries not yet flushed, in order: whole entries, at least one, and
        no more than fit in ``max_items`` items after the first."""
        chosen: list[int] = []
        total = 0
        sizes = self._conn.execute(
            "SELECT seq, items FROM entries ORDER BY seq LIMIT ?", (max_items + 1,)
        ).fetchall()
        for seq, items in sizes:
            if chosen and total + items > max_items:
                break
            chosen.append(seq)
            total += items
        if not chosen:
            return []
        rows = self._conn.execute(
            "SELECT seq, payload FROM entries WHERE seq BETWEEN ? AND ? ORDER BY seq",
            (chosen[0], chosen[-1]),
        )
        return [self._read(seq, payload) for seq, payload in rows]

    def _read(self, seq: int, payload: bytes) -> JournalEntry:
        try:
            items = orjson.loads(payload)
            if not isinstance(items, list):
                raise TypeError("not a list")
        except (orjson.JSONDecodeError, TypeError) as error:
            # Only a corrupted file can do this (SQLite checksums nothing): say so, go on.
            log.error("usage journal %s: entry %d is unreadable (%s)", self.path, seq, error)
            self.quarantine(record_id(self.journal_id, seq, 0), payload, f"unreadable: {error}")
            items = []
        ids = [record_id(self.journal_id, seq, index) for index in range(len(items))]
        return JournalEntry(seq, ids, items)

    def count(self) -> int:
        """Items not yet flushed."""
        row = self._conn.execute("SELECT coalesce(sum(items), 0) FROM entries").fetchone()
        return int(row[0])

    def entries(self) -> int:
        """Entries (group commits) not yet flushed: a cheap backlog gauge."""
        row = self._conn.execute("SELECT count(*) FROM entries").fetchone()
        return int(row[0])

    def mark_flushed(self, up_to_seq: int) -> None:
        """Forget every entry up to ``up_to_seq``: the store has committed them."""
        self._conn.execute("DELETE FROM entries WHERE seq <= ?", (up_to_seq,))

    def quarantine(self, record_id: str, item: bytes, reason: str) -> None:
        """Keep an item the store refuses for an operator; its entry is then flushed
        with the rest (``mark_flushed``), so the item no longer blocks the journal."""
        self._conn.execute(
            "INSERT OR REPLACE INTO quarantine VALUES (?, ?, ?, ?)",
            (record_id, item, reason, time.time()),
        )

    def quarantined(self) -> int:
        row = self._conn.execute("SELECT count(*) FROM quarantine").fetchone()
        return int(row[0])

    def close(self) -> None:
        self._conn.close()
