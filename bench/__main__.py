"""``python -m bench``: start the targets, run the scenarios, print and record the results.

Exit status: 0 all measured and every bar passed, 1 a run failed (the
numbers are not results), 2 bad arguments, 3 all measured but a bar failed.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from bench import report, scenarios
from bench.proc import PIN_LAYOUTS, BenchError, Pinning, pin_self, raise_nofile
from bench.targets import TARGETS, Sim, SimSettings, simulator, target

SCENARIOS = ("nonstream", "stream", "idle-streams")


def _csv(allowed: Sequence[str]) -> Callable[[str], list[str]]:
    """An argparse type for comma-separated choices."""

    def parse(text: str) -> list[str]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        unknown = [item for item in items if item not in allowed]
        if unknown or not items:
            raise argparse.ArgumentTypeError(
                f"choose from {', '.join(allowed)} (got {', '.join(unknown) or 'nothing'})"
            )
        return items

    return parse


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--scenarios", type=_csv(SCENARIOS), default=list(SCENARIOS))
    parser.add_argument("--targets", type=_csv(TARGETS), default=list(TARGETS))
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of wrk warm-up")
    parser.add_argument("--connections", type=int, default=50, help="concurrent connections")
    parser.add_argument("--workers", type=int, default=1, help="lockgate worker processes")
    parser.add_argument("--stream-count", type=int, default=2000, help="streams for TTFT")
    parser.add_argument("--idle-streams", type=int, default=1000, help="slow streams to hold")
    parser.add_argument("--idle-hold", type=float, default=5.0, help="seconds to hold them")
    parser.add_argument(
        "--pin",
        choices=PIN_LAYOUTS,
        default="split",
        help="CPU layout (see bench/README.md); default: split",
    )
    parser.add_argument("--no-json", action="store_true", help="do not write bench/results/")
    args = parser.parse_args(argv)
    if not 1 <= args.connections <= 10_000 or not 0 < args.duration <= 600:
        parser.error("--connections must be 1..10000 and --duration 0..600 s")
    if not 1 <= args.workers <= 64 or not 1 <= args.stream_count <= 100_000:
        parser.error("--workers must be 1..64 and --stream-count 1..100000")
    if not 0 <= args.warmup <= 60:
        parser.error("--warmup must be 0..60 s")
    if not 1 <= args.idle_streams <= 20_000 or not 0 <= args.idle_hold <= 600:
        parser.error("--idle-streams must be 1..20000 and --idle-hold 0..600 s")
    return args


def _terminate(signum: int, _frame: FrameType | None) -> None:
    """SIGTERM/SIGHUP unwind like Ctrl-C, so every child is stopped on the way out."""
    raise KeyboardInterrupt(f"signal {signum}")


def run(args: argparse.Namespace, pin: Pinning, tmp: Path) -> report.Results:
    """Each scenario group against each target in turn, one simulator per group."""
    results = report.Results()
    opts = scenarios.Options(
        duration_s=args.duration,
        warmup_s=args.warmup,
        connections=args.connections,
        stream_count=args.stream_count,
        idle_streams=args.idle_streams,
        idle_hold_s=args.idle_hold,
        cpu_groups=pin.groups(),
    )
    throughput = [s for s in args.scenarios if s in ("nonstream", "stream")]
    if throughput:
        with simulator(tmp, pin, SimSettings(output_tokens=64), "sim-instant") as sim:
            for name in args.targets:
                _throughput(results, name, throughput, tmp, pin, sim, args.workers, opts)
    if "idle-streams" in args.scenarios:
        slow = SimSettings(
            ttft_ms=20,
            tokens_per_s=1,
            output_tokens=scenarios.IDLE_TOKENS,
            capacity=args.idle_streams + 100,
        )
        with simulator(tmp, pin, slow, "sim-slow") as sim:
            for name in args.targets:
                print(f"... idle-streams / {name}", file=sys.stderr, flush=True)
                try:
                    with target(name, tmp, pin, sim, args.workers) as started:
                        results.idle.append(scenarios.idle_streams(started, opts))
                except BenchError as exc:
                    results.idle.append(
                        scenarios.IdleRow(name, wanted=args.idle_streams, error=str(exc))
                    )
    return results


def _throughput(
    results: report.Results,
    name: str,
    wanted: list[str],
    tmp: Path,
    pin: Pinning,
    sim: Sim,
    workers: int,
    opts: scenarios.Options,
) -> None:
    """Start one proxy (or none, for direct) and run the throughput scenarios through it."""
    try:
        with target(name, tmp, pin, sim, workers) as started:
            for scenario in wanted:
                print(f"... {scenario} / {name}", file=sys.stderr, flush=True)
                try:
                    if scenario == "nonstream":
                        results.load.append(scenarios.nonstream(started, sim.child.pid, opts, tmp))
                    else:
                        load, client = scenarios.stream(started, sim.child.pid, opts, tmp)
                        results.load.append(load)
                        results.streams.append(client)
                except BenchError as exc:
                    results.load.append(scenarios.LoadRow(scenario, name, error=str(exc)))
                if not started.measured.alive():
                    raise BenchError(
                        f"{name} died during {scenario}; log:\n{started.measured.log_tail()}"
                    )
    except BenchError as exc:
        measured = {row.scenario for row in results.load if row.target == name}
        missing = [scenario for scenario in wanted if scenario not in measured]
        for scenario in missing:
            results.load.append(scenarios.LoadRow(scenario, name, error=str(exc)))
        if not missing:
            results.failures.append(f"{name}: {exc}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _terminate)
    machine = report.machine()
    nofile = raise_nofile()
    pin = Pinning.make(args.pin)
    pin_self(pin.load)
    meta = {
        "machine": machine,
        "pinning": pin.describe(),
        "nofile": nofile,
        "args": vars(args),
    }
    print(f"pinning: {pin.describe()}; fd limit {nofile}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="lockgate-bench-") as tmp:
        try:
            results = run(args, pin, Path(tmp))
        except KeyboardInterrupt:
            print("\ninterrupted: every started process has been stopped", file=sys.stderr)
            return 130
        except BenchError as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 1
    print(report.render(results))
    if not args.no_json:
        path = report.write_json(results, meta)
        print(f"\nresults: {path} (and {path.parent / 'latest.json'})")
    if report.has_errors(results):
        return 1
    return 3 if any(c.status == "FAIL" for c in report.checks(results)) else 0


if __name__ == "__main__":
    sys.exit(main())
