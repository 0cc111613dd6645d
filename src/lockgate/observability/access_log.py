"""The access log: one JSON line per request, written off the event loop.

Why not the ``logging`` module: a ``LogRecord`` and a formatter cost several
microseconds per line, and even a ``QueueHandler`` builds the record on the
loop. Here ``settle`` builds a dict, serialises it with ``orjson`` and
appends the bytes to a deque (thread-safe in CPython); a writer thread
wakes every ``flush_interval_s``, takes whatever accumulated and writes it
in one system call. A stalled destination (a full pipe, a slow disk) stalls
only that thread; past ``max_pending`` lines, new lines are dropped and
counted (``lockgate_access_log_dropped_total``) rather than growing memory.

What is never written: response bodies (completions), headers
(``Authorization``, API keys, cookies), and error *messages*, which may quote
an upstream's answer and with it the prompt. Request bodies (prompts) only
for a project that opted in (``log_prompts``), redacted: ``prompt_log.py``. Only the error's
``code`` (``"other"`` when an upstream's own code is not a plain word) and
``source`` appear. The model a client asked for is
written only when it resolved to a configured model or looks like a model
name, never free text.

Several workers may share the destination: lines are whole in each write,
writes to a regular file use ``O_APPEND``, and writes to a pipe (stdout under
a supervisor) are cut at line boundaries into ``PIPE_BUF``-sized pieces,
which the kernel keeps atomic.
"""

from __future__ import annotations

import collections
import logging
import os
import re
import select
import stat
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson
from prometheus_client.metrics_core import CounterMetricFamily, Metric

from lockgate.dataplane.context import RequestContext
from lockgate.observability.prompt_log import PromptRedactor
from lockgate.observability.timings import request_timings

log = logging.getLogger(__name__)

STDOUT = "-"
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@-]{0,127}", re.ASCII)
_ERROR_CODE = re.compile(r"[A-Za-z0-9_.:-]{1,64}", re.ASCII)
_JSON_LINE = orjson.OPT_APPEND_NEWLINE


def _ms(seconds: float) -> float:
    """Milliseconds to the microsecond (truncated: three times cheaper than ``round``)."""
    return int(seconds * 1_000_000.0) / 1000.0


class AccessLog:
    """A ``Settler`` writing one JSON line per request to ``destination`` ("-": stdout).

    Call ``start()`` once in the worker (after the fork: the writer is a
    thread) and ``close()`` at shutdown, after draining, to write what is
    left. Lines settled before ``start`` wait in the buffer.
    """

    def __init__(
        self,
        destination: str | os.PathLike[str] = STDOUT,
        *,
        flush_interval_s: float = 0.05,
        max_pending: int = 100_000,
        clock: Callable[[], float] = time.time,
        prompts: PromptRedactor | None = None,
    ) -> None:
        self._destination = destination
        # Opted-in projects' prompts, redacted (None: never, whatever a project asks).
        self._prompts = prompts
        self._flush_interval_s = flush_interval_s
        self._max_pending = max_pending
        self._clock = clock
        self._pending: collections.deque[bytes] = collections.deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fd = -1
        self._piece_bytes = 0  # > 0: the destination is a pipe; cut writes to this size
        self._millisecond = -1
        self._second = -1
        self._second_text = ""
        self._stamp = ""
        self.dropped = 0
        self.write_errors = 0

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        if os.fspath(self._destination) == STDOUT:
            self._fd = 1
        else:
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
            self._fd = os.open(self._destination, flags, 0o640)
        mode = os.fstat(self._fd).st_mode
        if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
            self._piece_bytes = select.PIPE_BUF
        self._thread = threading.Thread(target=self._run, name="lockgate-access-log", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the writer after it wrote every line settled so far."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        thread.join()
        if self._fd > 2:
            os.close(self._fd)
        self._fd = -1

    # -- hot path ----------------------------------------------------------------------
    def settle(self, ctx: RequestContext) -> None:
        pending = self._pending
        if len(pending) >= self._max_pending:
            self.dropped += 1
            return
        pending.append(orjson.dumps(self.fields(ctx), option=_JSON_LINE))

    def fields(self, ctx: RequestContext) -> dict[str, Any]:
        """The line for one request, as a dict (also what tests and other sinks read)."""
        total_s, gateway_s, upstream_s, ttft_s, _ = request_timings(ctx)
        model = ctx.model
        deployment = ctx.deployment
        principal = ctx.principal
        error = ctx.error
        usage = ctx.usage
        requested = ctx.requested_model
        if model is None and _MODEL_NAME.fullmatch(requested) is None:
            requested = ""
        if error is not None:
            error_source: str | None = error.source  # a StrEnum: orjson writes its value
            error_code: str | None = error.code
            if _ERROR_CODE.fullmatch(error.code) is None:
                error_code = "other"  # an upstream's own code that is not a plain word
        elif ctx.is_client_disconnected:
            error_source, error_code = "client", "client_disconnected"
        elif ctx.status == 0:  # no answer, no error: the pipeline crashed
            error_source, error_code = "gateway", "internal_error"
        else:
            error_source = error_code = None
        client_ttfb = ctx.first_byte_to_client_at
        trace = ctx.trace
        line = {
            "time": self._timestamp(),
            "request_id": ctx.request_id,
            # Tracing off: null. On: the id of the trace (sampled or not) this request is in.
            "trace_id": trace.trace_id if trace is not None else None,
            "principal": principal.id,
            "organization_id": principal.organization_id,
            "project_id": principal.project_id,
            "client_ip": ctx.client_ip,
            "operation": ctx.operation,  # an Enum: orjson writes its value
            "model": model.name if model is not None else None,
            "requested_model": requested or None,
            "deployment": deployment.name if deployment is not None else None,
            "stream": ctx.is_stream,
            "status": ctx.status,
            "error_source": error_source,
            "error_code": error_code,
            "client_disconnected": ctx.is_client_disconnected,
            "input_tokens": usage.prompt_tokens if usage is not None else None,
            "output_tokens": usage.completion_tokens if usage is not None else None,
            "cached_tokens": usage.cached_tokens if usage is not None else None,
            "total_ms": _ms(total_s),
            "gateway_ms": _ms(gateway_s),
            "upstream_ms": _ms(upstream_s) if upstream_s is not None else None,
            "ttft_ms": _ms(ttft_s) if ttft_s is not None else None,
            "client_ttfb_ms": (
                _ms(client_ttfb - ctx.started_at) if client_ttfb is not None else None
            ),
        }
        if principal.log_prompts and self._prompts is not None:
            line["prompt"] = self._prompts.prompt_of(ctx.operation, ctx.body)
        return line

    def _timestamp(self) -> str:
        """UTC ISO 8601 with milliseconds, formatted once per millisecond (lines share it)."""
        millisecond = int(self._clock() * 1000.0)
        if millisecond != self._millisecond:
            self._millisecond = millisecond
            second, fraction = divmod(millisecond, 1000)
            if second != self._second:
                self._second = second
                self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._stamp = f"{self._second_text}.{fraction:03d}Z"
        return self._stamp

    # -- writer thread -----------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.wait(self._flush_interval_s):
            self._flush()
        self._flush()

    def _flush(self) -> None:
        pending = self._pending
        lines = []
        while pending:
            lines.append(pending.popleft())
        if not lines:
            return
        try:
            for piece in self._pieces(lines):
                _write_all(self._fd, piece)
        except OSError as exc:
            self.write_errors += 1
            if self.write_errors == 1 or self.write_errors % 1000 == 0:
                log.error(
                    "access log: cannot write (%d failures so far): %s", self.write_errors, exc
                )

    def _pieces(self, lines: list[bytes]) -> Iterator[bytes]:
        limit = self._piece_bytes
        if limit <= 0:
            yield b"".join(lines)
            return
        piece: list[bytes] = []
        size = 0
        for line in lines:
            if piece and size + len(line) > limit:
                yield b"".join(piece)
                piece, size = [], 0
            piece.append(line)
            size += len(line)
        if piece:
            yield b"".join(piece)

    # -- metrics -----------------------------------------------------------------------
    def collect(self) -> Iterator[Metric]:
        """Its own health, for the metrics registry: lines dropped, failed writes."""
        yield CounterMetricFamily(
            "lockgate_access_log_dropped",
            "Access-log lines dropped because the writer fell behind.",
            value=self.dropped,
        )
        yield CounterMetricFamily(
            "lockgate_access_log_write_errors",
            "Access-log batches that could not be written.",
            value=self.write_errors,
        )


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
