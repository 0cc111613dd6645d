"""The simulated inference engine: a batch of bounded size, a FIFO queue, timing, counters.

Pure asyncio and no HTTP, so the scheduling rules can be reasoned about (and
tested) without sockets. One ``Sequence`` is one request's life in the engine:
``submit`` (running at once or queued), ``admitted`` (wait for a slot),
``prefill`` (time to first token), ``decode`` (one inter-token gap) and
``produce`` (count tokens as they come out), and always ``finish`` at the end,
which hands the slot to the head of the queue.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Sequence as Seq
from typing import Any

from lockgate.sim.config import SimConfig
from lockgate.sim.prefix_cache import PrefixCache

PromptBlocks = tuple[int, Seq[int]]
"""A prompt's length in tokens and its prefix-cache block hashes."""

# Requests whose token counts ``usage_by_request`` keeps (the oldest are forgotten).
MAX_TRACKED_REQUESTS = 100_000

_QUEUED = 0
_RUNNING = 1
_DONE = 2


class QueueFull(Exception):
    """The waiting queue is at ``max_waiting``; the request is turned away."""


class Sequence:
    """One request inside the engine, from submission to ``finish``."""

    __slots__ = (
        "_engine",
        "_next_at",
        "_prompts",
        "_state",
        "_waiter",
        "cached_tokens",
        "produced",
        "prompt_tokens",
        "request_id",
    )

    def __init__(
        self,
        engine: Engine,
        prompt_tokens: int,
        prompts: Seq[PromptBlocks],
        request_id: bytes | None = None,
    ) -> None:
        self._engine = engine
        self.request_id = request_id
        self.prompt_tokens = prompt_tokens
        self._prompts = prompts
        self.cached_tokens = 0
        self.produced = 0
        self._state = _QUEUED
        self._waiter: asyncio.Future[None] | None = None
        self._next_at = 0.0

    @property
    def is_running(self) -> bool:
        return self._state == _RUNNING

    async def admitted(self) -> None:
        """Wait (FIFO) until the engine has room for this sequence."""
        if self._waiter is not None and self._state == _QUEUED:
            await self._waiter

    async def prefill(self) -> None:
        """Time to first token: fixed latency plus compute for the uncached prompt."""
        config = self._engine.config
        loop = asyncio.get_running_loop()
        if not config.is_instant:
            uncached = self.prompt_tokens - self.cached_tokens
            delay = (config.ttft_ms + config.prefill_ms_per_token * uncached) / 1000.0
            if delay > 0:
                await asyncio.sleep(delay)
        self._next_at = loop.time()

    async def decode(self) -> None:
        """Wait one inter-token gap, longer the fuller the batch is.

        Deadlines are absolute so sleep overheads do not accumulate into a
        slower decode rate; a sequence that fell behind (slow reader) restarts
        from now rather than bursting to catch up.
        """
        engine = self._engine
        tokens_per_s = engine.config.tokens_per_s
        if tokens_per_s <= 0:
            return
        gap = engine.slowdown_factor() / tokens_per_s
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._next_at = max(self._next_at + gap, now)
        delay = self._next_at - now
        if delay > 0:
            await asyncio.sleep(delay)

    def produce(self, count: int) -> None:
        self.produced += count
        engine = self._engine
        engine.completion_tokens_total += count
        engine.kv_tokens += count

    def finish(self) -> None:
        """Leave the engine (done, failed or cancelled); safe to call more than once."""
        self._engine._finish(self)


class Engine:
    """Scheduler and counters; one per simulated server, no global state."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.cache = PrefixCache(config.block_size, config.kv_cache_tokens)
        self._queue: collections.deque[Sequence] = collections.deque()
        self.running = 0
        self.kv_tokens = 0
        self.reset_counters()

    def reset_counters(self) -> None:
        self.requests_total = 0
        self.completed = 0
        self.peak_running = 0  # most sequences running at once (tests of admission queues)
        self.cancelled = 0
        self.failed: dict[str, int] = {}
        self.rejected: dict[str, int] = {}
        self.prompt_tokens_total = 0
        self.completion_tokens_total = 0
        self.cached_tokens_total = 0
        self.prefix_cache_queries = 0
        self.prefix_cache_hits = 0
        self.success_by_reason: dict[str, int] = {}
        # x-request-id → (prompt, completion, cached) tokens the engine spent on it: what
        # the totals above add up, per request (metering tests compare a ledger with it).
        # Ordered: forgetting the oldest is popitem(last=False), O(1). (A plain dict is
        # not: deleting from its front leaves holes that ``next(iter())`` walks over
        # again on every call, which made a long-running simulator slower by the request.)
        self.usage_by_request: collections.OrderedDict[str, tuple[int, int, int]] = (
            collections.OrderedDict()
        )

    def reset(self) -> None:
        """Counters to zero and a cold prefix cache; in-flight work is left alone."""
        self.reset_counters()
        self.cache.clear()

    # -- scheduling ---------------------------------------------------------
    @property
    def waiting(self) -> int:
        return len(self._queue)

    @property
    def kv_cache_usage(self) -> float:
        return min(1.0, self.kv_tokens / self.config.kv_cache_tokens)

    def slowdown_factor(self) -> float:
        config = self.config
        return 1.0 + config.batch_slowdown * self.running / config.capacity

    def submit(
        self, prompt_tokens: int, prompts: Seq[PromptBlocks] = (), request_id: bytes | None = None
    ) -> Sequence:
        """Start a sequence now if there is room, else queue it (or raise ``QueueFull``).

        ``prompts`` holds (length, block hashes) per prompt for the prefix
        cache; pass none for work that does not use it (embeddings, rerank).
        """
        seq = Sequence(self, prompt_tokens, prompts, request_id)
        if self.running < self.config.capacity and not self._queue:
            self._start(seq)
            return seq
        max_waiting = self.config.max_waiting
        if max_waiting is not None and len(self._queue) >= max_waiting:
            raise QueueFull
        seq._waiter = asyncio.get_running_loop().create_future()
        self._queue.append(seq)
        return seq

    def _start(self, seq: Sequence) -> None:
        seq._state = _RUNNING
        self.running += 1
        if self.running > self.peak_running:
            self.peak_running = self.running
        prompt_tokens = seq.prompt_tokens
        self.prompt_tokens_total += prompt_tokens
        if seq._prompts:
            cached = 0
            cache = self.cache
            for length, hashes in seq._prompts:
                cached += cache.match_and_store(hashes, length)
            seq.cached_tokens = cached
            self.cached_tokens_total += cached
            self.prefix_cache_queries += prompt_tokens
            self.prefix_cache_hits += cached
        self.kv_tokens += prompt_tokens

    def _finish(self, seq: Sequence) -> None:
        state = seq._state
        seq._state = _DONE
        if state == _QUEUED:
            # Cancelled while waiting: it never ran, so it holds nothing.
            self._queue.remove(seq)
            self._note_usage(seq, 0)
            return
        if state != _RUNNING:
            return
        self._note_usage(seq, seq.prompt_tokens)
        self.running -= 1
        self.kv_tokens -= seq.prompt_tokens + seq.produced
        queue = self._queue
        while queue and self.running < self.config.capacity:
            nxt = queue.popleft()
            self._start(nxt)
            if nxt._waiter is not None and not nxt._waiter.done():
                nxt._waiter.set_result(None)

    # -- accounting -----------------------------------------------------------
    def _note_usage(self, seq: Sequence, prompt_tokens: int) -> None:
        if seq.request_id is None:
            return
        by_request = self.usage_by_request
        if len(by_request) >= MAX_TRACKED_REQUESTS:
            by_request.popitem(last=False)
        key = seq.request_id.decode("latin-1")
        by_request[key] = (prompt_tokens, seq.produced, seq.cached_tokens)

    def record_completed(self, finish_reasons: Seq[str]) -> None:
        self.completed += 1
        by_reason = self.success_by_reason
        for reason in finish_reasons:
            by_reason[reason] = by_reason.get(reason, 0) + 1

    def record_failed(self, kind: str) -> None:
        self.failed[kind] = self.failed.get(kind, 0) + 1

    def record_rejected(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def stats(self) -> dict[str, Any]:
        return {
            "requests_total": self.requests_total,
            "completed": self.completed,
            "cancelled": self.cancelled,
            "failed": dict(self.failed),
            "rejected": dict(self.rejected),
            "running": self.running,
            "waiting": self.waiting,
            "prompt_tokens_total": self.prompt_tokens_total,
            "completion_tokens_total": self.completion_tokens_total,
            "cached_tokens_total": self.cached_tokens_total,
            "prefix_cache_queries_total": self.prefix_cache_queries,
            "prefix_cache_hits_total": self.prefix_cache_hits,
            "kv_cache_usage": self.kv_cache_usage,
        }
