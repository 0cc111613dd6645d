"""Per-key request debugging in the data plane: who is traced, what is captured, the writer.

An operator starts a debug session for one API key (``controlplane.actions.
request_debug``); every gateway process then captures that key's next requests
in full detail (``request_capture``) and a background writer stores them.

Cost when no key is traced: ``settle`` tests one dict for emptiness, and the
authorisation hook (``DebugTap``) adds one method call that does the same. A
traced request costs a dict lookup, then a few microseconds to build its
detail, which the writer serialises and stores off the hot path.

How a session reaches every worker of every replica: the action publishes on
the invalidation bus (``TOPIC_REQUEST_DEBUG``); each process reloads the active
sessions from the store on that message, on a bus reconnect, and every
``refresh_interval_s`` regardless (a lost message delays, never loses, a
session). Each process captures at most a session's ``remaining`` requests on
its own; the store takes one from the session per record it keeps and keeps
none past ``requested`` (``RequestDebug.store_captured``), then the writer
announces the exhausted session so the other processes stop too.

Attempts come from the request's trace (``ctx.trace``): a traced key's
request gets a sampled trace if tracing did not give it one, so the forward
stage records its attempts (and, with tracing on, its spans are exported).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from random import getrandbits
from typing import Protocol

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from lockgate.dataplane.context import RequestContext
from lockgate.dataplane.pipeline.authorize import Authorizer
from lockgate.invalidation.bus import InvalidationBus
from lockgate.observability.debug_model import CapturedRequest, DebugSession
from lockgate.observability.request_capture import request_detail
from lockgate.observability.tracing_context import RequestTrace

log = logging.getLogger("lockgate.request_debug")

TOPIC_REQUEST_DEBUG = "request_debug"  # as ``controlplane.actions.request_debug``
_KEY_PRINCIPAL = "api_key:"


class DebugStore(Protocol):
    """What ``store.repositories.request_debug.RequestDebug`` offers the data plane."""

    async def active_sessions(self, now: datetime | None = None) -> Sequence[DebugSession]: ...

    async def store_captured(
        self, captured: Sequence[CapturedRequest]
    ) -> tuple[int, list[str]]: ...

    async def prune(self, *, before: datetime) -> int: ...


@dataclass(slots=True)
class _Traced:
    """One key's session as this process tracks it."""

    session: DebugSession
    remaining: int  # this process's own countdown
    expires_at: float  # Unix time


class RequestDebugger:
    """Debug sessions of one worker: a ``Settler``, a Prometheus collector, and the
    owner of one background task (reload + writer). ``start`` in the worker's
    loop after the bus started; ``close`` after the data plane drained."""

    def __init__(
        self,
        store: DebugStore,
        bus: InvalidationBus | None = None,
        *,
        max_pending: int = 1000,
        flush_interval_s: float = 0.25,
        refresh_interval_s: float = 5.0,
        retention_s: float = 7 * 86400.0,
        prune_interval_s: float = 3600.0,
    ) -> None:
        self._store = store
        # Captured records and ended sessions older than this are deleted, by every
        # process once per ``prune_interval_s`` (a DELETE anyone may repeat).
        self._retention_s = retention_s
        self._prune_interval_s = prune_interval_s
        self._bus = bus
        self._max_pending = max_pending
        self._flush_interval_s = flush_interval_s
        self._refresh_interval_s = refresh_interval_s
        # Principal id ("api_key:<id>") -> its session; read on every request.
        self.traced: dict[str, _Traced] = {}
        self._pending: list[CapturedRequest] = []
        self._reload = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.captured = 0  # handed to the writer
        self.stored = 0  # the store kept
        self.dropped = 0  # over max_pending, or lost to a store outage at close
        self.write_failures = 0

    # -- hot path ----------------------------------------------------------------------
    def begin(self, ctx: RequestContext) -> None:
        """After authorisation: a traced key's request records its attempts."""
        if ctx.principal.id not in self.traced:
            return
        trace = ctx.trace
        if trace is None:
            ctx.trace = RequestTrace(getrandbits(128) or 1, None, True, None)
        elif not trace.is_sampled:
            sampled = RequestTrace(trace.trace_id_int, trace.parent_span_id, True, trace.tracestate)
            sampled.span_id = trace.span_id
            ctx.trace = sampled

    def settle(self, ctx: RequestContext) -> None:
        if not self.traced:
            return
        principal_id = ctx.principal.id
        traced = self.traced.get(principal_id)
        if traced is None:
            return
        now = time.time()
        if now >= traced.expires_at:
            del self.traced[principal_id]
            return
        traced.remaining -= 1
        if traced.remaining <= 0:
            del self.traced[principal_id]
        if len(self._pending) >= self._max_pending:
            self.dropped += 1
            return
        finished = ctx.finished_at if ctx.finished_at is not None else ctx.started_at
        received_at = now - (finished - ctx.started_at)
        session = traced.session
        self._pending.append(
            CapturedRequest(
                session_id=session.id,
                request_id=ctx.request_id,
                organization_id=session.organization_id,
                project_id=session.project_id,
                api_key_id=session.api_key_id,
                occurred_at=datetime.fromtimestamp(received_at, UTC),
                detail=request_detail(ctx, received_at),
            )
        )
        self.captured += 1

    # -- sessions ----------------------------------------------------------------------
    def sessions_changed(self, _key: str = "") -> None:
        """Bus handler (a session started, stopped or ran out; or a reconnect): reload."""
        self._reload.set()

    async def reload(self) -> None:
        """Replace the traced keys with the store's active sessions."""
        sessions = await self._store.active_sessions()
        traced: dict[str, _Traced] = {}
        for session in sorted(sessions, key=lambda s: s.id):  # the newest session wins
            principal_id = _KEY_PRINCIPAL + session.api_key_id
            known = self.traced.get(principal_id)
            remaining = session.remaining
            if known is not None and known.session.id == session.id:
                remaining = min(remaining, known.remaining)
            if remaining > 0:
                traced[principal_id] = _Traced(session, remaining, session.expires_at.timestamp())
        self.traced = traced

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        """Load the active sessions and start the background task. A store that fails
        now is retried by the task; it never stops the gateway from starting."""
        if self._bus is not None:
            self._bus.subscribe(TOPIC_REQUEST_DEBUG, self.sessions_changed)
            self._bus.on_reconnect(self.sessions_changed)
        try:
            await self.reload()
        except Exception as error:
            log.warning("request debugging: cannot load debug sessions yet (%s)", error)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="request-debug")

    async def close(self, timeout_s: float = 2.0) -> None:
        """Stop the task, then try (for ``timeout_s``) to store what is pending."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._pending:
            try:
                async with asyncio.timeout(timeout_s):
                    await self.flush()
            except Exception as error:  # a store outage at shutdown: say what is lost
                log.warning("request debugging: %d captured requests not stored (%s)",
                            len(self._pending), error)  # fmt: skip
                self.dropped += len(self._pending)
                self._pending = []

    async def flush(self) -> None:
        """Store what was captured so far (the writer's step; tests call it directly)."""
        batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            stored, exhausted = await self._store.store_captured(batch)
        except BaseException:
            # Keep it for the next attempt, within the bound.
            self._pending = (batch + self._pending)[: self._max_pending]
            raise
        self.stored += stored
        for session_id in exhausted:
            # Every process, this one included, reloads and drops the session.
            if self._bus is not None:
                await self._bus.publish(TOPIC_REQUEST_DEBUG, session_id)
            else:
                self._reload.set()

    async def _run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._reloading())
            group.create_task(self._writing())
            group.create_task(self._pruning())

    async def _reloading(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._refresh_interval_s):
                    await self._reload.wait()
            self._reload.clear()
            try:
                await self.reload()
            except Exception as error:
                log.warning("request debugging: cannot reload debug sessions (%s)", error)

    async def _pruning(self) -> None:
        while True:
            try:
                before = datetime.now(UTC) - timedelta(seconds=self._retention_s)
                await self._store.prune(before=before)
            except Exception as error:
                log.warning("request debugging: cannot delete old debug records (%s)", error)
            await asyncio.sleep(self._prune_interval_s)

    async def _writing(self) -> None:
        while True:
            await asyncio.sleep(self._flush_interval_s)
            try:
                await self.flush()
            except Exception as error:
                self.write_failures += 1
                log.warning("request debugging: cannot store captured requests (%s)", error)

    # -- metrics -----------------------------------------------------------------------
    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "lockgate_request_debug_traced_keys",
            "API keys under an active debug session in this worker.",
            value=len(self.traced),
        )
        yield CounterMetricFamily(
            "lockgate_request_debug_captured",
            "Requests captured at full detail for a debug session.",
            value=self.captured,
        )
        yield CounterMetricFamily(
            "lockgate_request_debug_dropped",
            "Captured requests dropped (writer backlog full, or the store down at shutdown).",
            value=self.dropped,
        )


class DebugTap:
    """The authorise stage, plus marking a traced key's request so its attempts are
    recorded. Wraps the real authoriser; with no key traced it adds one call and an
    emptiness test."""

    __slots__ = ("_debugger", "_inner")

    def __init__(self, inner: Authorizer, debugger: RequestDebugger) -> None:
        self._inner = inner
        self._debugger = debugger

    def authorize(self, ctx: RequestContext) -> None:
        self._inner.authorize(ctx)
        if self._debugger.traced:
            self._debugger.begin(ctx)
