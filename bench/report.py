"""Turning result rows into the tables, the project's pass/fail bars, and the JSON record.

Every figure is put next to "no gateway" (direct) and "the fastest proxy hop"
(nginx) from the same run on the same machine, because absolute numbers from
a 2-core box mean little on their own.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.scenarios import IdleRow, LoadRow, StreamRow

RESULTS = Path(__file__).parent / "results"

# The bars the project set itself (see bench/README.md).
MIN_RPS_VS_NGINX = 0.5
MAX_ADDED_P50_MS = 1.0
MIN_STREAMS_VS_NGINX = 0.5
MIN_RPS_WITH_AUTH = 0.95
MIN_RPS_WITH_LOCAL_LIMITS = 0.90
MIN_RPS_WITH_REDIS_LIMITS = 0.60
MIN_RPS_WITH_METRICS = 0.95
MIN_RPS_WITH_METERING = 0.97  # issue 6: metering costs < 3% of throughput
MAX_IDLE_RSS_MIB = 100.0
NOISY_PCT = 10.0  # foreign CPU use (% of one CPU) above which a row is flagged


@dataclass
class Results:
    """Everything one run produced, in the order it was produced."""

    load: list[LoadRow] = field(default_factory=list)
    streams: list[StreamRow] = field(default_factory=list)
    idle: list[IdleRow] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def load_row(self, scenario: str, target: str) -> LoadRow | None:
        for row in self.load:
            if row.scenario == scenario and row.target == target and row.error is None:
                return row
        return None


@dataclass
class Check:
    name: str
    status: str  # PASS, FAIL or SKIP
    detail: str


def _ratio(value: float, base: LoadRow | None) -> float | None:
    return value / base.rps if base is not None and base.rps else None


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def _line(cells: list[str], widths: list[int]) -> str:
    """Two text columns on the left, numbers right-aligned."""
    return "  ".join(
        c.ljust(w) if i < 2 else c.rjust(w)
        for i, (c, w) in enumerate(zip(cells, widths, strict=True))
    )


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [_line(header, widths), "  ".join("-" * w for w in widths)]
    lines.extend(_line(row, widths) for row in rows)
    return "\n".join(lines)


def derived(results: Results, row: LoadRow) -> dict[str, float | None]:
    """The row's ratio to direct and to nginx, and its p50 on top of direct's."""
    direct = results.load_row(row.scenario, "direct")
    nginx = results.load_row(row.scenario, "nginx")
    return {
        "vs_direct": _ratio(row.rps, direct),
        "vs_nginx": _ratio(row.rps, nginx),
        "added_p50_ms": row.p50_ms - direct.p50_ms if direct is not None else None,
    }


def load_table(results: Results) -> str:
    header = ["scenario", "target", "req/s", "p50 ms", "p99 ms", "CPU µs/req"]
    header += [
        "x direct",
        "x nginx",
        "+p50 ms",
        "CPU% target/sim/wrk/other",
        "busy% per CPU",
        "full",
    ]
    rows = []
    for row in results.load:
        if row.error is not None:
            rows.append([row.scenario, row.target, "FAILED", *["-"] * 9])
            continue
        d = derived(results, row)
        cpu = row.cpu_pct
        rows.append(
            [
                row.scenario,
                row.target,
                f"{row.rps:,.0f}",
                f"{row.p50_ms:.2f}",
                f"{row.p99_ms:.2f}",
                f"{row.cpu_us_per_req:.0f}",
                _fmt(d["vs_direct"], ".2f"),
                _fmt(d["vs_nginx"], ".2f"),
                _fmt(d["added_p50_ms"], "+.2f"),
                "/".join(_fmt(cpu.get(k), ".0f") for k in ("target", "sim", "wrk", "other")),
                "/".join(f"{b:.0f}" for b in row.cpu_busy_pct),
                row.full,
            ]
        )
    return _table(header, rows)


def stream_table(results: Results) -> str:
    direct = next((r for r in results.streams if r.target == "direct" and not r.error), None)
    header = ["stream client", "target", "streams/s", "TTFT p50", "TTFT p99"]
    header += ["total p50", "total p99", "+TTFT p50", "ok/sent"]
    rows = []
    for row in results.streams:
        added = row.ttft_p50_ms - direct.ttft_p50_ms if direct is not None else None
        rows.append(
            [
                "stream",
                row.target,
                f"{row.streams_per_s:,.0f}",
                f"{row.ttft_p50_ms:.2f}",
                f"{row.ttft_p99_ms:.2f}",
                f"{row.total_p50_ms:.2f}",
                f"{row.total_p99_ms:.2f}",
                _fmt(added, "+.2f"),
                f"{row.ok}/{row.count}",
            ]
        )
    return (
        _table(header, rows) + "\n(times in ms, from request sent to first data: event / to [DONE])"
    )


def idle_table(results: Results) -> str:
    header = ["idle-streams", "target", "open", "RSS before MiB", "RSS with open MiB"]
    header += ["KiB/stream", "RSS after MiB", "PSS with open MiB", "open s"]
    rows = [
        [
            "idle-streams",
            row.target,
            f"{row.opened}/{row.wanted}",
            f"{row.rss_before_mib:.1f}",
            f"{row.rss_peak_mib:.1f}",
            f"{row.kib_per_stream:.1f}",
            f"{row.rss_after_mib:.1f}",
            f"{row.pss_peak_mib:.1f}",
            f"{row.open_s:.1f}",
        ]
        if row.opened
        else ["idle-streams", row.target, "FAILED", *["-"] * 6]
        for row in results.idle
    ]
    return _table(header, rows)


def checks(results: Results) -> list[Check]:
    """The project's bars: each PASS, FAIL, or SKIP when the run did not measure it."""
    out = []
    for scenario, name, floor in (
        ("nonstream", "lockgate non-stream req/s >= 50% of nginx's", MIN_RPS_VS_NGINX),
        ("stream", "lockgate streams/s >= 50% of nginx's", MIN_STREAMS_VS_NGINX),
    ):
        out.append(_ratio_check(results, scenario, name, floor))
    out.append(
        _ratio_check(
            results,
            "nonstream",
            "API key authentication costs < 5% of non-stream req/s (lockgate-auth vs lockgate)",
            MIN_RPS_WITH_AUTH,
            subject="lockgate-auth",
            baseline="lockgate",
        )
    )
    for subject, floor, what in (
        ("lockgate-limits", MIN_RPS_WITH_LOCAL_LIMITS, "in-process"),
        ("lockgate-redis", MIN_RPS_WITH_REDIS_LIMITS, "Redis"),
    ):
        out.append(
            _ratio_check(
                results,
                "nonstream",
                f"admission with {what} limits keeps >= {floor:.0%} of lockgate-auth's req/s",
                floor,
                subject=subject,
                baseline="lockgate-auth",
            )
        )
    out.append(
        _ratio_check(
            results,
            "nonstream",
            "per-request metrics cost < 5% of non-stream req/s (lockgate vs lockgate-nometrics)",
            MIN_RPS_WITH_METRICS,
            subject="lockgate",
            baseline="lockgate-nometrics",
        )
    )
    out.append(
        _ratio_check(
            results,
            "nonstream",
            "the usage ledger costs < 3% of non-stream req/s (lockgate vs lockgate-nometering)",
            MIN_RPS_WITH_METERING,
            subject="lockgate",
            baseline="lockgate-nometering",
        )
    )
    out.append(_added_p50_check(results))
    out.append(_idle_check(results))
    return out


def _ratio_check(
    results: Results,
    scenario: str,
    name: str,
    floor: float,
    *,
    subject: str = "lockgate",
    baseline: str = "nginx",
) -> Check:
    ran = {(r.scenario, r.target) for r in results.load}
    if not {(scenario, subject), (scenario, baseline)} <= ran:
        return Check(name, "SKIP", f"needs {subject} and {baseline} rows")
    mine, theirs = results.load_row(scenario, subject), results.load_row(scenario, baseline)
    if mine is None or theirs is None:
        return Check(name, "FAIL", "a run failed")
    ratio = mine.rps / theirs.rps if theirs.rps else 0.0
    status = "PASS" if ratio >= floor else "FAIL"
    detail = f"{mine.rps:,.0f} vs {theirs.rps:,.0f} = {ratio:.0%}"
    if mine.cpu_us_per_req and theirs.cpu_us_per_req:
        detail += f"; CPU {mine.cpu_us_per_req:.0f} vs {theirs.cpu_us_per_req:.0f} µs/req"
    return Check(name, status, detail)


def _added_p50_check(results: Results) -> Check:
    name = f"lockgate added p50 <= {MAX_ADDED_P50_MS:g} ms at 50 connections (non-stream)"
    ran = {(r.scenario, r.target) for r in results.load}
    if not {("nonstream", "lockgate"), ("nonstream", "direct")} <= ran:
        return Check(name, "SKIP", "needs lockgate and direct rows")
    gateway = results.load_row("nonstream", "lockgate")
    direct = results.load_row("nonstream", "direct")
    if gateway is None or direct is None:
        return Check(name, "FAIL", "a run failed")
    added = gateway.p50_ms - direct.p50_ms
    status = "PASS" if added <= MAX_ADDED_P50_MS else "FAIL"
    return Check(name, status, f"{gateway.p50_ms:.2f} - {direct.p50_ms:.2f} = {added:+.2f} ms")


def _idle_check(results: Results) -> Check:
    name = f"1,000 idle streams <= {MAX_IDLE_RSS_MIB:g} MiB gateway RSS"
    row = next((r for r in results.idle if r.target == "lockgate"), None)
    if row is None:
        return Check(name, "SKIP", "needs the idle-streams lockgate row")
    if row.error is not None:
        return Check(name, "FAIL", row.error)
    status = "PASS" if row.rss_peak_mib <= MAX_IDLE_RSS_MIB else "FAIL"
    return Check(
        name,
        status,
        f"{row.rss_peak_mib:.1f} MiB with {row.opened} open "
        f"({row.kib_per_stream:.1f} KiB/stream over {row.rss_before_mib:.1f} MiB idle; "
        f"PSS {row.pss_peak_mib:.1f} MiB, shared pages counted once)",
    )


def render(results: Results) -> str:
    """All tables, then failures verbatim, then the bars."""
    parts = []
    if results.load:
        parts.append(load_table(results))
    if results.streams:
        parts.append(stream_table(results))
    if results.idle:
        parts.append(idle_table(results))
    noisy = [r for r in results.load if r.cpu_pct.get("other", 0.0) > NOISY_PCT]
    if noisy:
        worst = max(r.cpu_pct["other"] for r in noisy)
        rows = ", ".join(f"{r.scenario}/{r.target}" for r in noisy)
        parts.append(
            f"WARNING: other processes on this machine used up to {worst:.0f}% of a CPU during "
            f"{rows}: those figures are skewed; rerun when the machine is quiet."
        )
    errors = [f"{r.scenario}/{r.target}: {r.error}" for r in results.load if r.error]
    errors += [f"stream-client/{r.target}: {r.error}" for r in results.streams if r.error]
    errors += [f"idle-streams/{r.target}: {r.error}" for r in results.idle if r.error]
    errors += results.failures
    if errors:
        parts.append("ERRORS (these rows are not results):\n" + "\n".join(_dedupe(errors)))
    parts.append("\n".join(f"{c.status}  {c.name}: {c.detail}" for c in checks(results)))
    return "\n\n".join(parts)


def _dedupe(errors: list[str]) -> list[str]:
    """One target that failed to start fails all its rows: print its log once."""
    seen: set[str] = set()
    lines = []
    for error in errors:
        where, _, what = error.partition(": ")
        lines.append(f"  {where}: (same as above)" if what in seen else f"  {error}")
        seen.add(what)
    return lines


def has_errors(results: Results) -> bool:
    rows: list[LoadRow | StreamRow | IdleRow] = [*results.load, *results.streams, *results.idle]
    return bool(results.failures) or any(r.error is not None for r in rows)


def write_json(results: Results, meta: dict[str, Any]) -> Path:
    """Write ``results/<UTC timestamp>.json`` and copy it to ``results/latest.json``."""
    RESULTS.mkdir(exist_ok=True)
    record = {
        "meta": meta,
        "load": [{**asdict(r), **derived(results, r)} for r in results.load],
        "stream_client": [asdict(r) for r in results.streams],
        "idle_streams": [asdict(r) for r in results.idle],
        "failures": results.failures,
        "checks": [asdict(c) for c in checks(results)],
    }
    path = RESULTS / f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    shutil.copyfile(path, RESULTS / "latest.json")
    return path


def _commit() -> str:
    """The code measured: HEAD, marked dirty when the work tree has changes (read-only git)."""
    root = Path(__file__).parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return f"{head}{'+dirty' if dirty else ''}" if head else "unknown"


def machine() -> dict[str, Any]:
    """What the numbers were measured on (they are meaningless without it)."""
    return {
        "commit": _commit(),
        "cpus": os.cpu_count(),
        "affinity": sorted(os.sched_getaffinity(0)),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
