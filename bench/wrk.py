"""Driving wrk: a generated Lua script POSTs the body and prints the summary as JSON.

wrk is C, so at one thread it takes at most one core, leaving the other to the
process under test. A Lua ``done()`` gives exact percentiles from wrk's own
histogram, which beats scraping its human-readable output.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.proc import BenchError, children_cpu_seconds

MARKER = "WRK_JSON "
PERCENTILES = (50, 90, 99, 99.9)

_LUA = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
%(headers)swrk.body = [==[%(body)s]==]

done = function(summary, latency, requests)
  local p = {}
  for _, q in ipairs({%(percentiles)s}) do
    p[#p + 1] = string.format('"%%g":%%d', q, latency:percentile(q))
  end
  local e = summary.errors
  io.write(string.format(
    '%(marker)s{"requests":%%d,"duration_us":%%d,"bytes":%%d,' ..
    '"errors":{"connect":%%d,"read":%%d,"write":%%d,"status":%%d,"timeout":%%d},' ..
    '"latency_us":{"min":%%d,"max":%%d,"mean":%%.1f,"percentiles":{%%s}}}\\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.max, latency.mean, table.concat(p, ",")))
end
"""


@dataclass
class WrkResult:
    """One wrk run, in the units the report uses."""

    requests: int
    duration_s: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    errors: dict[str, int]
    wrk_cpu_s: float

    @property
    def error_count(self) -> int:
        """Non-2xx answers (wrk counts status >= 400) plus socket errors and timeouts."""
        return sum(self.errors.values())


def write_script(path: Path, body: str, headers: tuple[tuple[str, str], ...] = ()) -> Path:
    """Write the Lua script that POSTs ``body`` (a JSON document) and prints JSON at the end."""
    path.write_text(
        _LUA
        % {
            "headers": "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in headers),
            "body": body,
            "percentiles": ", ".join(f"{q:g}" for q in PERCENTILES),
            "marker": MARKER,
        }
    )
    return path


def run(
    url: str,
    script: Path,
    *,
    connections: int,
    duration_s: float,
    threads: int = 1,
    timeout_s: float = 10.0,
) -> WrkResult:
    """Run wrk once for ``duration_s`` (it is pinned by the caller's affinity, inherited)."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise BenchError("wrk is not installed (apt-get install -y wrk)")
    argv = [
        wrk,
        *(f"-t{threads}", f"-c{connections}", f"-d{duration_s:g}s", f"--timeout={timeout_s:g}s"),
        *("-s", str(script), url),
    ]
    cpu_before = children_cpu_seconds()
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=duration_s + timeout_s + 30, check=False
    )
    wrk_cpu = children_cpu_seconds() - cpu_before
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith(MARKER)), None)
    if done.returncode != 0 or line is None:
        raise BenchError(
            f"wrk failed (exit {done.returncode}): {' '.join(argv)}\n{done.stdout}{done.stderr}"
        )
    data = json.loads(line[len(MARKER) :])
    duration = data["duration_us"] / 1e6
    pct = {float(k): v / 1000 for k, v in data["latency_us"]["percentiles"].items()}
    return WrkResult(
        requests=data["requests"],
        duration_s=duration,
        rps=data["requests"] / duration if duration else 0.0,
        p50_ms=pct[50.0],
        p90_ms=pct[90.0],
        p99_ms=pct[99.0],
        p999_ms=pct[99.9],
        max_ms=data["latency_us"]["max"] / 1000,
        errors=data["errors"],
        wrk_cpu_s=wrk_cpu,
    )
