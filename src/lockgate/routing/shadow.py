"""Shadow traffic: a copy of a request to a rollout's candidate, whose answer is only recorded.

The client's request is never touched: the route stage hands ``submit`` what
it needs to build the copy, and returns at once. The copy runs in a task this
sender owns, at most ``max_concurrency`` at a time (a copy beyond that is
skipped and counted, never queued, so shadowing cannot build a backlog or
slow anything down), with its own deadline, on its own connections.

What is recorded per copy (``ShadowRecord``): the candidate's status,
latency, token counts and an output digest, and — once the client's request
has settled — the primary's status, latency and tokens. ``is_output_match``
compares the candidate's output with the primary's when the primary's output
was handed over (``primary_output``), else it is None.
The last ``keep`` records and running totals are kept per worker.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

log = logging.getLogger("lockgate.routing.shadow")


@dataclass(slots=True)
class ShadowAnswer:
    """What the candidate answered to a copy."""

    status: int
    latency_ms: float
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    output: str | None = None
    error: str | None = None


@dataclass(slots=True)
class ShadowRecord:
    request_id: str
    model: str  # the public model
    candidate: str  # name@version that got the copy
    at: float  # wall clock, seconds
    shadow: ShadowAnswer | None = None
    primary_status: int | None = None
    primary_latency_ms: float | None = None
    primary_completion_tokens: int | None = None
    primary_output_digest: str | None = None
    shadow_output_digest: str | None = field(default=None)

    @property
    def is_output_match(self) -> bool | None:
        if self.primary_output_digest is None or self.shadow_output_digest is None:
            return None
        return self.primary_output_digest == self.shadow_output_digest


def output_digest(text: str) -> str:
    """Whitespace-insensitive digest of an answer's text (what "matched" compares)."""
    return hashlib.blake2b(" ".join(text.split()).encode(), digest_size=16).hexdigest()


# Sends one copy and returns what the candidate answered (``ShadowSender`` bounds its time).
Send = Callable[[], Awaitable[ShadowAnswer]]


@dataclass(slots=True)
class ShadowTotals:
    sent: int = 0
    skipped: int = 0  # over max_concurrency
    errors: int = 0  # the candidate failed (status >= 500, or no answer)
    matched: int = 0
    compared: int = 0


class ShadowSender:
    """Owns the copies in flight (one task each) and what they answered."""

    def __init__(self, *, keep: int = 1000) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self._records: deque[ShadowRecord] = deque(maxlen=keep)
        self._pending: dict[str, ShadowRecord] = {}
        self.totals: dict[str, ShadowTotals] = {}
        self._is_closed = False

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def submit(
        self,
        request_id: str,
        model: str,
        candidate: str,
        send: Send,
        *,
        max_concurrency: int,
        timeout_s: float,
    ) -> bool:
        """Start a copy unless ``max_concurrency`` copies are in flight; whether it started."""
        totals = self.totals.setdefault(model, ShadowTotals())
        if self._is_closed or len(self._tasks) >= max_concurrency:
            totals.skipped += 1
            return False
        record = ShadowRecord(request_id, model, candidate, time.time())
        self._pending[request_id] = record
        totals.sent += 1
        task = asyncio.get_running_loop().create_task(self._run(record, send, timeout_s))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    def is_pending(self, request_id: str) -> bool:
        return request_id in self._pending

    def primary_settled(
        self,
        request_id: str,
        status: int,
        latency_ms: float | None,
        completion_tokens: int | None,
    ) -> None:
        """The client's own request finished (the settle stage says so)."""
        record = self._pending.get(request_id)
        if record is None:
            return
        record.primary_status = status
        record.primary_latency_ms = latency_ms
        record.primary_completion_tokens = completion_tokens
        self._finish_if_done(record)

    def primary_output(self, request_id: str, text: str) -> None:
        """The primary's answer text, where the relay can hand it over."""
        record = self._pending.get(request_id)
        if record is not None:
            record.primary_output_digest = output_digest(text)

    def records(self, model: str | None = None) -> list[ShadowRecord]:
        """Completed records, oldest first (of ``model`` only, if given)."""
        return [r for r in self._records if model is None or r.model == model]

    async def close(self) -> None:
        """Cancel the copies in flight and wait for them (never blocks shutdown long)."""
        self._is_closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, record: ShadowRecord, send: Send, timeout_s: float) -> None:
        started = time.perf_counter()
        try:
            answer = await asyncio.wait_for(send(), timeout_s)
        except TimeoutError:
            answer = ShadowAnswer(0, (time.perf_counter() - started) * 1000, error="timeout")
        except asyncio.CancelledError:
            self._pending.pop(record.request_id, None)
            raise
        except Exception as exc:  # a broken copy must never surface anywhere else
            log.warning("shadow copy to %s failed: %r", record.candidate, exc)
            answer = ShadowAnswer(0, (time.perf_counter() - started) * 1000, error=repr(exc))
        record.shadow = answer
        if answer.output is not None:
            record.shadow_output_digest = output_digest(answer.output)
        if answer.error is not None or answer.status >= 500:
            self.totals[record.model].errors += 1
        self._finish_if_done(record)

    def _finish_if_done(self, record: ShadowRecord) -> None:
        if record.shadow is None or record.primary_status is None:
            return
        self._pending.pop(record.request_id, None)
        self._records.append(record)
        match = record.is_output_match
        if match is not None:
            totals = self.totals[record.model]
            totals.compared += 1
            totals.matched += match
