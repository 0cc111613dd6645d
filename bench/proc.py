"""Process plumbing: spawn pinned children, stop them for sure, read their CPU and memory.

Everything the harness starts goes through :func:`spawn`, so every child gets
the same treatment: its own session (Ctrl-C reaches only the harness, which then
stops children in order), a raised file-descriptor limit, a CPU pin, death when
the harness dies, and its output in a log file rather than a pipe nobody reads.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
NOFILE_WANTED = 65536
_PR_SET_PDEATHSIG = 1


class BenchError(RuntimeError):
    """A target misbehaved (did not start, answered wrongly): the run must say so loudly."""


PIN_LAYOUTS = ("client", "split", "off")


@dataclass(frozen=True)
class Pinning:
    """Which CPUs the process under test, the simulator and the load (wrk, client) get.

    ``None`` means "not pinned": the scheduler decides. Layouts, for 2+ CPUs
    (first half of the CPUs = A, second half = B):

    * ``client``: load generator alone on B; proxy and simulator share A.
    * ``split``: proxy alone on A; load generator and simulator share B.
    * ``off``: nothing pinned.
    """

    layout: str
    sut: frozenset[int] | None
    sim: frozenset[int] | None
    load: frozenset[int] | None

    @classmethod
    def make(cls, layout: str) -> Pinning:
        cpus = sorted(os.sched_getaffinity(0))
        if layout == "off" or len(cpus) < 2:
            return cls("off", None, None, None)
        half = len(cpus) // 2
        a, b = frozenset(cpus[:half]), frozenset(cpus[half:])
        if layout == "split":
            return cls(layout, a, b, b)
        if layout == "client":
            return cls(layout, a, a, b)
        raise ValueError(f"unknown pinning layout {layout!r}; choose from {PIN_LAYOUTS}")

    def groups(self) -> list[tuple[str, frozenset[int]]]:
        """The pinned CPU sets, each named by what runs there (to say which one was full)."""
        if self.sut is None or self.sim is None or self.load is None:
            return [("all CPUs", frozenset(os.sched_getaffinity(0)))]
        if self.layout == "split":
            return [("target", self.sut), ("sim+wrk", self.load)]
        return [("target+sim", self.sut), ("wrk", self.load)]

    def describe(self) -> str:
        if self.sut is None or self.sim is None or self.load is None:
            return "off (the scheduler places everything)"
        return (
            f"{self.layout}: process under test on CPU {_cpus(self.sut)}, "
            f"simulator on CPU {_cpus(self.sim)}, "
            f"wrk and the stream client on CPU {_cpus(self.load)}"
        )


def _cpus(cpus: frozenset[int]) -> str:
    return ",".join(str(c) for c in sorted(cpus))


def raise_nofile() -> int:
    """Lift our soft fd limit to the hard one (1,000 streams need ~2,000 fds per proxy).

    Children inherit it; :func:`spawn` sets it again in case the caller lowered it.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = NOFILE_WANTED if hard == resource.RLIM_INFINITY else min(hard, NOFILE_WANTED)
    if soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _child_setup(cpus: frozenset[int] | None) -> Callable[[], None]:
    """What runs in the child between fork and exec: pin, fd limit, die with the parent."""

    def setup() -> None:
        if cpus is not None:
            os.sched_setaffinity(0, cpus)
        raise_nofile()
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return setup


def pin_self(cpus: frozenset[int] | None) -> None:
    """Pin the harness itself (it runs the asyncio stream client) with the load."""
    if cpus is not None:
        os.sched_setaffinity(0, cpus)


@dataclass
class Child:
    """A started process: its name (for messages), Popen handle and log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM the child's process group (its workers too), then SIGKILL if it lingers."""
        if not self.alive():
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            self.popen.wait(5)
        # Workers that outlived their parent are still in the group: finish them too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)


def spawn(
    name: str,
    argv: Sequence[str],
    log_dir: Path,
    cpus: frozenset[int] | None,
    env: dict[str, str] | None = None,
) -> Child:
    """Start ``argv`` in its own session, pinned to ``cpus``, output to ``log_dir/name.log``."""
    log = log_dir / f"{name}.log"
    child_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with log.open("ab") as out:  # a target started twice keeps both logs
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=child_env,
            start_new_session=True,
            preexec_fn=_child_setup(cpus),  # affinity, fd limit, parent-death signal
        )
    return Child(name, popen, log)


@contextlib.contextmanager
def running(child: Child) -> Iterator[Child]:
    """Stop ``child`` when the block ends, however it ends (error, Ctrl-C)."""
    try:
        yield child
    finally:
        child.stop()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the small race is acceptable on a quiet machine)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_http_ok(child: Child, url: str, timeout_s: float = 30.0) -> None:
    """Poll ``url`` until it answers 200; raise with the child's log if it dies or never does."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        if not child.alive():
            raise BenchError(
                f"{child.name} exited with code {child.popen.returncode} before it was ready; "
                f"the end of its log:\n{child.log_tail()}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback
                if response.status == 200:
                    return
                last = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except (OSError, urllib.error.URLError) as exc:
            last = str(exc)
        time.sleep(0.1)
    raise BenchError(
        f"{child.name} was not ready at {url} after {timeout_s:g} s ({last}); "
        f"the end of its log:\n{child.log_tail()}"
    )


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its live descendants (a multi-worker gateway is a tree)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def cpu_seconds(pids: Sequence[int]) -> dict[int, float]:
    """utime+stime of each pid, in seconds (a pid that vanished is left out)."""
    times: dict[int, float] = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the ")": state is field 0, utime is 11 and stime 12 (fields 14, 15 in proc(5)).
        times[pid] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return times


class CpuMeter:
    """CPU used by a process tree between :meth:`start` and :meth:`stop`.

    Counts per pid so a worker present at both ends contributes exactly its delta.
    """

    def __init__(self, root_pid: int) -> None:
        self.root_pid = root_pid
        self._before: dict[int, float] = {}

    def start(self) -> None:
        self._before = cpu_seconds(process_tree(self.root_pid))

    def stop(self) -> float:
        after = cpu_seconds(process_tree(self.root_pid))
        return sum(t - self._before.get(pid, 0.0) for pid, t in after.items())


def pss_kib(root_pid: int) -> int:
    """Proportional memory (Pss) of a process and its descendants, in KiB: each page
    shared by n processes counts 1/n in each, so pages a forked tree shares (the
    supervisor's and the workers' code) count once, where summed RSS counts them per
    process."""
    return _tree_sum(root_pid, "smaps_rollup", "Pss:")


def rss_kib(root_pid: int) -> int:
    """Resident memory (VmRSS) of a process and its descendants, in KiB."""
    return _tree_sum(root_pid, "status", "VmRSS:")


def _tree_sum(root_pid: int, proc_file: str, field: str) -> int:
    """``field`` (a KiB figure) of ``/proc/<pid>/<proc_file>``, summed over the tree."""
    total = 0
    for pid in process_tree(root_pid):
        try:
            text = Path(f"/proc/{pid}/{proc_file}").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith(field):
                total += int(line.split()[1])
                break
    return total


@dataclass(frozen=True)
class CpuSnapshot:
    """/proc/stat at one instant: process-attributable time, and per-CPU busy/total ticks.

    ``task_s`` (user+nice+system, all CPUs) minus what our processes used is what
    *others* ran during a measurement: colleagues' test suites on a shared box
    skew every figure. ``per_cpu`` also counts irq/softirq, which on loopback is
    our own network traffic and belongs to no process: it says whether a core was
    really full.
    """

    task_s: float
    per_cpu: tuple[tuple[int, int], ...]

    @classmethod
    def take(cls) -> CpuSnapshot:
        task = 0.0
        per_cpu = []
        with open("/proc/stat") as stat:
            for line in stat:
                if not line.startswith("cpu"):
                    break
                name, *values = line.split()
                user, nice, system, idle, iowait, irq, softirq, steal = map(int, values[:8])
                if name == "cpu":
                    task = (user + nice + system) / CLOCK_TICKS
                else:
                    busy = user + nice + system + irq + softirq + steal
                    per_cpu.append((busy, busy + idle + iowait))
        return cls(task, tuple(per_cpu))

    def busy_pct_since(self, before: CpuSnapshot) -> list[float]:
        """Percent busy of each CPU between ``before`` and this snapshot."""
        return [
            100 * (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0
            for (b0, t0), (b1, t1) in zip(before.per_cpu, self.per_cpu, strict=True)
        ]


def children_cpu_seconds() -> float:
    """CPU of our children that have exited and been reaped (that is how wrk is measured)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
