"""The durable local journal: where a usage record lives until the store has it.

The request path must not wait for a disk, so ``append`` only puts the item on
an in-memory queue (a ``deque``: its appends and pops are atomic under the GIL)
and wakes the journal's own thread. That thread encodes what has queued up as
JSON — one entry per group of up to ``MAX_ITEMS_PER_ENTRY`` items, not one per
item, which makes journalling cost about 0.3 µs per item — and commits it to a
SQLite file in WAL mode with ``synchronous=FULL``: one transaction, one fsync,
per group.

When to commit is a trade between the CPU a commit costs (an fsync: 0.1-0.2 ms
of CPU on the reference VM) and how long a response held for its record
(``metering.acknowledge: durable``) waits. While the process is busy (it used
``process_load.BUSY_SHARE`` of a core or more over the last 50 ms), waiting lets
a group gather as the loop serves other requests: at most one commit per
``commit_interval_s``. While it is not, waiting gathers nothing — the requests
that would join are the ones held for this very commit, so a client waits for
the interval and the core idles — and the group is committed at once. (Waiting
always cost a sequential client the whole interval: 470 instead of ~1,500
requests/s.)

Durability, exactly:
- An item is durable once the group commit that holds it has returned; from
  then on it survives SIGKILL, an OS crash and power loss (the WAL was fsynced).
  With ``survives_power_loss=False`` (``synchronous=NORMAL``: no fsync per
  commit) it survives the process's death, SIGKILL included, but an OS crash or
  power loss may take the last commits; that saves an fsync per group.
  ``durable`` counts such items in append order, and ``await sync()`` returns
  once everything appended before the call is durable.
- Items appended but not yet committed are in process memory only: lost if the
  process dies. That window is at most ``commit_interval_s`` (only while the
  process is busy) plus the commit that takes them (an fsync: ~0.2-0.5 ms on the
  reference VM), so under 3 ms by default, longer only while the disk is slow or
  failing. Callers that must not answer before the record is durable await
  ``sync()``: the data plane does, before a response's end, with
  ``metering.acknowledge: durable`` (the default).
- A commit that fails (disk full, I/O error) is retried with back-off and logged,
  the group kept in memory; ``commit_failures`` counts the attempts.

Entries leave the journal only through ``JournalReader.mark_flushed``
(``journal_reader.py``), which the flusher calls after the store committed them,
so whatever is still in the file at start-up is exactly what the store may not
have yet, and is re-sent. Each
item's record id is derived from the journal's random id, the entry's sequence
number (``AUTOINCREMENT``: never reused) and the item's place in the entry, so
a re-sent item carries the same id and the store's ``ON CONFLICT DO NOTHING``
drops the copy.

One process appends to a journal at a time (an ``flock`` on ``<path>.lock``
enforces it; the kernel releases it when the process dies), so each gateway
worker needs a journal file of its own. Readers need no lock: SQLite serialises
the reader's deletes against the writer's commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import secrets
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

import orjson

from lockgate.metering.process_load import ProcessLoad

log = logging.getLogger(__name__)

MAX_ITEMS_PER_ENTRY: Final = 1000  # bounds one entry's size, and so a flusher batch's
_BUSY_TIMEOUT_MS = 10_000
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    # ``items``: how many items ``payload`` (a JSON array) holds, readable without decoding it.
    "CREATE TABLE IF NOT EXISTS entries "
    "(seq INTEGER PRIMARY KEY AUTOINCREMENT, items INTEGER NOT NULL, payload BLOB NOT NULL)",
    # Items the store refuses as invalid: kept (never silently dropped) for an operator.
    "CREATE TABLE IF NOT EXISTS quarantine (record_id TEXT PRIMARY KEY, item BLOB NOT NULL, "
    "reason TEXT NOT NULL, at REAL NOT NULL)",
)


class JournalBusy(RuntimeError):
    """Another process is appending to this journal file."""


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One group commit's items (or part of one), as the reader found it."""

    seq: int
    record_ids: list[str]
    items: list[Any]  # the items as appended (JSON values), in order; empty if unreadable


def connect(path: Path, *, is_durable: bool) -> sqlite3.Connection:
    """A connection in WAL mode, autocommit (transactions are explicit BEGIN/COMMIT).

    ``is_durable``: ``synchronous=FULL`` (fsync the WAL on every commit) for the
    appender; the reader's deletes use NORMAL, since losing one only means a
    re-send that the store drops as a duplicate.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))  # usage is tenant data
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {'FULL' if is_durable else 'NORMAL'}")
    return conn


def journal_id(conn: sqlite3.Connection) -> str:
    """The journal's random id, created with the file; part of every record id."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for statement in _SCHEMA:
            conn.execute(statement)
        row = conn.execute("SELECT value FROM meta WHERE key = 'journal_id'").fetchone()
        if row is None:
            journal_id = secrets.token_hex(8)
            conn.execute("INSERT INTO meta VALUES ('journal_id', ?)", (journal_id,))
        else:
            journal_id = str(row[0])
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return journal_id


def record_id(journal_id: str, seq: int, index: int) -> str:
    """The ledger id of item ``index`` of entry ``seq``: unique, and the same on every read."""
    return f"ur_{journal_id}_{seq}_{index}"


def _valid_text(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    return value


class Journal:
    """Appends JSON-serialisable items (the metering ``capture`` lists) durably, in groups.

    ``append`` must be called from one thread (the event loop's); ``sync`` from
    that loop.
    """

    def __init__(
        self,
        path: Path,
        *,
        commit_interval_s: float = 0.005,
        survives_power_loss: bool = True,
        cpu_clock: Callable[[], float] = time.process_time,
    ) -> None:
        """``cpu_clock``: the CPU seconds the serving process has used (its load is what
        decides whether a commit waits for a group; a parameter for tests)."""
        self.path = path
        self._interval_s = commit_interval_s
        self._survives_power_loss = survives_power_loss
        self._load = ProcessLoad(cpu_clock)
        self._queue: deque[Any] = deque()
        self._wake = threading.Event()
        self._is_stopping = False
        self._thread: threading.Thread | None = None
        self._lock_file: IO[bytes] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # (items appended before the call, its future, loop time of the call), in order.
        self._waiters: list[tuple[int, asyncio.Future[None], float]] = []
        self.journal_id = ""
        # Counters, for metrics and for ``sync``.
        self.appended = 0
        self.durable = 0
        self.commit_failures = 0
        self.encode_failures = 0
        self.dropped_after_close = 0
        self.sync_timeouts = 0  # waits ended by ``release_overdue``, not by a commit

    def open(self) -> None:
        """Take the journal's lock, create its tables, start the journal thread.

        Call from the event loop that will call ``sync``. Raises ``JournalBusy``
        if another process holds the journal, ``sqlite3.Error``/``OSError`` if the
        file cannot be opened.
        """
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock_file = open(self.path.with_name(self.path.name + ".lock"), "ab")  # noqa: SIM115
        try:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            lock_file.close()
            raise JournalBusy(f"{self.path} is in use by another process") from error
        self._lock_file = lock_file
        conn = connect(self.path, is_durable=True)
        try:
            self.journal_id = journal_id(conn)
        finally:
            conn.close()
        with contextlib.suppress(RuntimeError):
            self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="usage-journal", daemon=True)
        self._thread.start()

    def append(self, item: Any) -> None:
        """Queue ``item`` for the next group commit. Never blocks, never raises."""
        if self._is_stopping:
            self.dropped_after_close += 1
            if self.dropped_after_close == 1:  # once: the counter has the rest
                log.error("usage journal %s is closed: records settled now are lost", self.path)
            return
        self._queue.append(item)
        self.appended += 1
        # A lost wake-up is impossible: the thread clears the event before it
        # drains, so an item queued after the drain finds the event clear and sets it.
        if not self._wake.is_set():
            self._wake.set()

    async def sync(self) -> None:
        """Return once every item appended before the call is durable."""
        target = self.appended
        if self.durable >= target:
            return
        # The loop ``open`` ran in (CPython 3.11's get_running_loop costs a getpid syscall).
        loop = self._loop or asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        # Register first, then re-check: the journal thread bumps ``durable`` before it
        # looks for waiters, so one of the two sides always sees the other.
        self._waiters.append((target, future, loop.time()))
        if self.durable >= target:
            self._release_waiters()
        await future

    def close(self, timeout_s: float = 10.0) -> None:
        """Commit what is queued, stop the thread, release the lock. Blocks: call it
        through ``asyncio.to_thread``. Items appended afterwards are dropped (counted)."""
        self._is_stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.error("usage journal %s: the final commit did not finish in time", self.path)
        if self._lock_file is not None:
            self._lock_file.close()  # releases the flock
            self._lock_file = None

    # -- the journal thread --------------------------------------------------------

    def _run(self) -> None:
        conn = connect(self.path, is_durable=self._survives_power_loss)
        last_commit = 0.0
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                is_stopping = self._is_stopping
                now = time.monotonic()
                pause = self._interval_s - (now - last_commit)
                if pause > 0 and not is_stopping and self._load.is_busy(now):
                    time.sleep(pause)  # let a group gather: at most one fsync per interval
                count = len(self._queue)
                if count:
                    last_commit = time.monotonic()
                    self._commit_group(conn, count, give_up=is_stopping)
                if is_stopping and not self._queue:
                    return
        finally:
            conn.close()

    def _commit_group(self, conn: sqlite3.Connection, count: int, *, give_up: bool) -> None:
        batch = [self._queue.popleft() for _ in range(count)]
        try:
            rows = []
            for start in range(0, count, MAX_ITEMS_PER_ENTRY):
                items, payload = self._encode(batch[start : start + MAX_ITEMS_PER_ENTRY])
                rows.append((items, payload))
            self._commit(conn, rows, give_up=give_up)
        except Exception:
            # Not a disk error (those are retried): a bug. Keep the thread alive.
            log.exception("usage journal %s: %d records lost", self.path, count)
        self.durable += count
        if self._waiters and self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed
                self._loop.call_soon_threadsafe(self._release_waiters)

    def _encode(self, items: list[Any]) -> tuple[int, bytes]:
        try:
            return len(items), orjson.dumps(items)
        except TypeError:
            pass
        # Some item is not JSON: text that is not valid Unicode (a lone surrogate, which
        # Python's json accepts, e.g. in a JWT claim) is kept with U+FFFD in its place;
        # anything else is a bug upstream of the journal, and only that item is lost.
        encoded = []
        for item in items:
            try:
                encoded.append(orjson.dumps(item))
                continue
            except TypeError:
                pass
            try:
                encoded.append(orjson.dumps([_valid_text(value) for value in item]))
            except TypeError:
                self.encode_failures += 1
                log.exception("usage journal: a record could not be encoded and is lost")
        return len(encoded), b"[" + b",".join(encoded) + b"]"

    def _commit(
        self, conn: sqlite3.Connection, rows: list[tuple[int, bytes]], *, give_up: bool
    ) -> None:
        delay_s = 0.05
        deadline = time.monotonic() + 5.0
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.executemany("INSERT INTO entries (items, payload) VALUES (?, ?)", rows)
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                return
            except sqlite3.Error as error:
                self.commit_failures += 1
                if give_up and time.monotonic() > deadline:
                    log.error(
                        "usage journal %s: %d records lost at shutdown: %s",
                        self.path,
                        len(rows),
                        error,
                    )
                    return
                log.error(
                    "usage journal %s: commit failed (%s); retrying in %.2f s",
                    self.path,
                    error,
                    delay_s,
                )
                time.sleep(delay_s)
                delay_s = min(delay_s * 2, 2.0)

    def _release_waiters(self) -> None:
        durable = self.durable
        waiting = []
        for waiter in self._waiters:
            if waiter[0] <= durable:
                if not waiter[1].done():
                    waiter[1].set_result(None)
            else:
                waiting.append(waiter)
        self._waiters = waiting

    def release_overdue(self, before: float) -> int:
        """End the ``sync`` waits that began before ``before`` (loop time) although their
        items are not durable yet: commits are failing or stuck. Returns how many (also
        counted in ``sync_timeouts``). Call from the loop that called ``sync``."""
        overdue = [w for w in self._waiters if w[2] < before]
        if not overdue:
            return 0
        self._waiters = [w for w in self._waiters if w[2] >= before]
        for _, future, _ in overdue:
            if not future.done():
                future.set_result(None)
        self.sync_timeouts += len(overdue)
        return len(overdue)
