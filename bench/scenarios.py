"""The three scenarios, each run against one started target; they return plain result rows.

Every scenario first proves the target answers correctly (a smoke request),
then measures. A load run with any error is not a result: it is reported as
a failure with the errors verbatim, so a broken gateway never shows up as a
fast one.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import idleclient, streamclient, wrk
from bench.proc import BenchError, CpuMeter, CpuSnapshot, pss_kib, rss_kib
from bench.targets import HOST, MODEL, Target

PATH = "/v1/chat/completions"
STREAM_EVENTS = 32
IDLE_TOKENS = 60
FULL_PCT = 90.0


@dataclass
class Options:
    """Knobs shared by all scenarios (from the command line)."""

    duration_s: float = 10.0
    warmup_s: float = 2.0
    connections: int = 50
    stream_count: int = 2000
    idle_streams: int = 1000
    idle_hold_s: float = 5.0
    cpu_groups: list[tuple[str, frozenset[int]]] = field(default_factory=list)


@dataclass
class LoadRow:
    """A wrk run: throughput, latency, CPU per request of each component."""

    scenario: str
    target: str
    rps: float = 0.0
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p99_ms: float = 0.0
    p999_ms: float = 0.0
    max_ms: float = 0.0
    requests: int = 0
    duration_s: float = 0.0
    cpu_us_per_req: float = 0.0
    cpu_pct: dict[str, float] = field(default_factory=dict)
    cpu_busy_pct: list[float] = field(default_factory=list)
    full: str = ""
    errors: dict[str, int] = field(default_factory=dict)
    error: str | None = None


@dataclass
class StreamRow:
    """The asyncio client's view of streams: time to first event and to ``[DONE]``."""

    target: str
    count: int = 0
    ok: int = 0
    failed: int = 0
    streams_per_s: float = 0.0
    ttft_p50_ms: float = 0.0
    ttft_p99_ms: float = 0.0
    total_p50_ms: float = 0.0
    total_p99_ms: float = 0.0
    errors: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class IdleRow:
    """Memory of the process under test while many slow streams are open through it."""

    target: str
    wanted: int = 0
    opened: int = 0
    failed: int = 0
    ended_early: int = 0
    open_s: float = 0.0
    rss_before_mib: float = 0.0
    rss_peak_mib: float = 0.0
    rss_after_mib: float = 0.0
    kib_per_stream: float = 0.0
    pss_peak_mib: float = 0.0  # the tree's proportional memory with the streams open
    errors: list[str] = field(default_factory=list)
    error: str | None = None


def chat_body(*, stream: bool, max_tokens: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": max_tokens,
    }
    if stream:
        body["stream"] = True
    return body


def smoke_nonstream(target: Target) -> None:
    """One request by hand: a 200 with a well-formed completion, or the body verbatim."""
    conn = http.client.HTTPConnection(HOST, target.port, timeout=10)
    try:
        conn.request(
            "POST",
            PATH,
            json.dumps(chat_body(stream=False, max_tokens=8)),
            {"content-type": "application/json", **dict(target.headers)},
        )
        response = conn.getresponse()
        raw = response.read()
    except OSError as exc:
        raise BenchError(f"{target.name}: smoke request failed: {exc}") from exc
    finally:
        conn.close()
    try:
        message = json.loads(raw)["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        message = None
    if response.status != 200 or not isinstance(message, str):
        raise BenchError(
            f"{target.name}: smoke request answered HTTP {response.status}: {raw[:500]!r}"
        )


def _load(
    scenario: str,
    target: Target,
    sim_pid: int,
    body: dict[str, Any],
    opts: Options,
    tmp: Path,
) -> LoadRow:
    """Warm up, then one measured wrk run with CPU meters around it."""
    row = LoadRow(scenario, target.name)
    script = wrk.write_script(
        tmp / f"{scenario}-{target.name}.lua", json.dumps(body), target.headers
    )
    url = target.url + PATH
    if opts.warmup_s > 0:
        wrk.run(url, script, connections=opts.connections, duration_s=opts.warmup_s)
    sut, sim = CpuMeter(target.measured.pid), CpuMeter(sim_pid)
    before = CpuSnapshot.take()
    sut.start()
    sim.start()
    result = wrk.run(url, script, connections=opts.connections, duration_s=opts.duration_s)
    sut_cpu, sim_cpu = sut.stop(), sim.stop()
    after = CpuSnapshot.take()
    row.cpu_busy_pct = after.busy_pct_since(before)
    row.full = full_cores(row.cpu_busy_pct, opts.cpu_groups)
    busy = after.task_s - before.task_s
    row.rps, row.requests, row.duration_s = result.rps, result.requests, result.duration_s
    row.p50_ms, row.p90_ms, row.p99_ms = result.p50_ms, result.p90_ms, result.p99_ms
    row.p999_ms, row.max_ms = result.p999_ms, result.max_ms
    row.errors = result.errors
    row.cpu_us_per_req = sut_cpu * 1e6 / result.requests if result.requests else 0.0
    seconds = result.duration_s or opts.duration_s
    row.cpu_pct = {"target": 100 * sut_cpu / seconds, "wrk": 100 * result.wrk_cpu_s / seconds}
    ours = sut_cpu + result.wrk_cpu_s
    if target.measured.pid != sim_pid:
        row.cpu_pct["sim"] = 100 * sim_cpu / seconds
        ours += sim_cpu
    row.cpu_pct["other"] = max(0.0, 100 * (busy - ours) / seconds)
    if result.error_count or not result.requests:
        row.error = (
            f"{result.error_count} errors in {result.requests} responses "
            f"(status = HTTP >= 400): {result.errors}"
        )
    return row


def full_cores(busy: list[float], groups: list[tuple[str, frozenset[int]]]) -> str:
    """Which pinned CPU set ran at >= 90 %: the likely bottleneck ("none": latency-bound)."""
    full = [
        name
        for name, cpus in groups
        if cpus and sum(busy[c] for c in cpus if c < len(busy)) / len(cpus) >= FULL_PCT
    ]
    return ",".join(full) or "none"


def nonstream(target: Target, sim_pid: int, opts: Options, tmp: Path) -> LoadRow:
    """Small non-streaming completions: the per-request cost of the hop."""
    smoke_nonstream(target)
    return _load("nonstream", target, sim_pid, chat_body(stream=False, max_tokens=8), opts, tmp)


def stream(target: Target, sim_pid: int, opts: Options, tmp: Path) -> tuple[LoadRow, StreamRow]:
    """Streams of 32 events: streams/s from wrk, then TTFT/total from the asyncio client."""
    body = chat_body(stream=True, max_tokens=STREAM_EVENTS)
    encoded = streamclient.stream_body(MODEL, STREAM_EVENTS)
    check = _stream_client(target, encoded, concurrency=1, count=1)
    if check.failed:
        raise BenchError(f"{target.name}: smoke stream failed: {check.errors}")
    load = _load("stream", target, sim_pid, body, opts, tmp)
    # Warm the client's connections first: 50 simultaneous connects are not TTFT.
    warm = min(4 * opts.connections, opts.stream_count)
    _stream_client(target, encoded, concurrency=opts.connections, count=warm)
    stats = _stream_client(target, encoded, concurrency=opts.connections, count=opts.stream_count)
    row = StreamRow(
        target.name,
        count=stats.count,
        ok=stats.ok,
        failed=stats.failed,
        streams_per_s=stats.ok / stats.wall_s if stats.wall_s else 0.0,
        ttft_p50_ms=streamclient.percentile(stats.ttft_s, 50) * 1000,
        ttft_p99_ms=streamclient.percentile(stats.ttft_s, 99) * 1000,
        total_p50_ms=streamclient.percentile(stats.total_s, 50) * 1000,
        total_p99_ms=streamclient.percentile(stats.total_s, 99) * 1000,
        errors=stats.errors,
    )
    if stats.failed:
        row.error = f"{stats.failed} of {stats.count} streams broken, e.g. {stats.errors[:2]}"
    return load, row


def _stream_client(
    target: Target, body: bytes, *, concurrency: int, count: int
) -> streamclient.StreamStats:
    with asyncio.Runner(loop_factory=streamclient.new_loop) as runner:
        return runner.run(
            streamclient.run_streams(
                target.url,
                body,
                concurrency=concurrency,
                count=count,
                expect_events=STREAM_EVENTS,
                headers=target.header_bytes,
            )
        )


def idle_streams(target: Target, opts: Options) -> IdleRow:
    """Hold many slow streams open through the target; what does each one cost in memory?"""
    body = streamclient.stream_body(MODEL, IDLE_TOKENS)
    pid = target.measured.pid
    row = IdleRow(target.name, wanted=opts.idle_streams)
    with asyncio.Runner(loop_factory=streamclient.new_loop) as runner:
        # A few streams first, so lazily built state is not charged to the 1,000.
        warm = runner.run(
            idleclient.hold_streams(
                target.url,
                body,
                count=10,
                hold_s=0,
                sample=lambda: None,
                headers=target.header_bytes,
            )
        )
        if warm.failed:
            raise BenchError(f"{target.name}: warm-up streams failed: {warm.errors}")
        time.sleep(0.5)
        before = rss_kib(pid)
        peak = [before]
        pss_peak = [pss_kib(pid)]

        def sample() -> None:
            peak[0] = max(peak[0], rss_kib(pid))
            pss_peak[0] = max(pss_peak[0], pss_kib(pid))

        stats = runner.run(
            idleclient.hold_streams(
                target.url,
                body,
                count=opts.idle_streams,
                hold_s=opts.idle_hold_s,
                sample=sample,
                headers=target.header_bytes,
            )
        )
    time.sleep(1.0)
    row.opened, row.failed, row.ended_early = stats.opened, stats.failed, stats.ended_early
    row.open_s, row.errors = stats.open_s, stats.errors
    row.rss_before_mib = before / 1024
    row.rss_peak_mib = peak[0] / 1024
    row.pss_peak_mib = pss_peak[0] / 1024
    row.rss_after_mib = rss_kib(pid) / 1024
    row.kib_per_stream = (peak[0] - before) / stats.opened if stats.opened else 0.0
    if stats.opened < opts.idle_streams or stats.failed or stats.ended_early:
        row.error = (
            f"{stats.opened}/{opts.idle_streams} opened, {stats.failed} failed, "
            f"{stats.ended_early} ended before the hold was over; e.g. {stats.errors[:2]}"
        )
    return row
