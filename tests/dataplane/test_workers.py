"""``lockgate serve --workers N`` as operators run it, and ``lockgate config validate``.

The gateway runs as a real subprocess (a parent supervising forked workers that
share the port with SO_REUSEPORT); the simulator runs in the test's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from lockgate.metering.flush_process import PROCESS_NAME
from lockgate.sim import SimConfig, SimServer
from tests.support import raw_request

LOCKGATE = [sys.executable, "-m", "lockgate"]
WORKERS = 2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def write_config(path: Path, port: int, sim_base_url: str) -> Path:
    path.write_text(
        f"""\
server:
  host: 127.0.0.1
  port: {port}
  drain_timeout_s: 5
  data_dir: {path.parent / "data"}
auth:
  allow_anonymous: true
admission:
  enabled: false
models:
  - name: sim-chat
    deployments:
      - name: sim-chat-d1
        base_url: {sim_base_url}
        forward_headers: ["x-sim-*"]
""",
        encoding="utf-8",
    )
    return path


def children_of(pid: int) -> set[int]:
    """Live (non-zombie) processes whose parent is ``pid``, from /proc."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        state, ppid = stat.rpartition(")")[2].split()[:2]
        if int(ppid) == pid and state != "Z":
            found.add(int(entry))
    return found


def workers_of(pid: int) -> set[int]:
    """``pid``'s children other than its usage-ledger flusher process."""
    found = set()
    for child in children_of(pid):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{child}/comm").read_text().strip() != PROCESS_NAME:
                found.add(child)
    return found


def forked_by(pid: int) -> list[str]:
    """Children of ``pid``'s main thread: one small file, unlike a scan of /proc."""
    return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()


def is_running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def listening_on(pid: int, port: int) -> bool:
    """Whether ``pid`` holds a socket listening on ``port`` (via /proc/net/tcp inodes)."""
    listening = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, inode = fields[1], fields[3], fields[9]
        if state == "0A" and int(local.rpartition(":")[2], 16) == port:
            listening.add(f"socket:[{inode}]")
    held = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                held.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return bool(listening & held)


async def eventually(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s}s: {what}")
        await asyncio.sleep(0.02)


def chat(output_tokens: int, *, stream: bool = False) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(
        {"model": "sim-chat", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    ).encode()
    return body, {"content-type": "application/json", "x-sim-output-tokens": str(output_tokens)}


@pytest.fixture
async def sim() -> AsyncIterator[SimServer]:
    config = SimConfig(ttft_ms=1, tokens_per_s=100, output_tokens=4)
    async with SimServer(config, host="127.0.0.1", port=0) as server:
        yield server


@contextlib.asynccontextmanager
async def lockgate_serve(config: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """``lockgate serve --workers 2``; killed, workers first, if still running at the end."""
    process = await asyncio.create_subprocess_exec(
        *LOCKGATE,
        "serve",
        "--config",
        str(config),
        "--workers",
        str(WORKERS),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield process
    finally:
        for child in children_of(process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        if process.returncode is None:
            process.kill()
            await process.wait()


@pytest.fixture
async def served(
    tmp_path: Path, sim: SimServer
) -> AsyncIterator[tuple[asyncio.subprocess.Process, int]]:
    """The gateway up and ready on a free port, in front of ``sim``."""
    port = free_port()
    config = write_config(tmp_path / "lockgate.yaml", port, sim.base_url)
    async with lockgate_serve(config) as process:
        assert process.stdout is not None
        ready = await asyncio.wait_for(process.stdout.readline(), 15)
        assert f"http://127.0.0.1:{port} (workers={WORKERS})".encode() in ready, ready
        yield process, port


async def test_workers_serve_and_drain_on_sigterm(
    served: tuple[asyncio.subprocess.Process, int], sim: SimServer
) -> None:
    process, port = served
    await eventually(lambda: len(workers_of(process.pid)) == WORKERS, 10, "both workers run")
    workers = workers_of(process.pid)
    await eventually(
        lambda: all(listening_on(pid, port) for pid in workers), 10, "every worker listens"
    )
    assert not listening_on(process.pid, port), "the parent only supervises"

    body, headers = chat(output_tokens=4)
    answers = await asyncio.gather(
        *(raw_request(port, "POST", "/v1/chat/completions", body, headers) for _ in range(50))
    )
    assert [a.status for a in answers] == [200] * 50
    assert all(json.loads(a.body)["usage"]["completion_tokens"] == 4 for a in answers)
    assert sim.engine.completed == 50

    # A stream in flight when SIGTERM arrives still completes: the workers drain.
    body, headers = chat(output_tokens=50, stream=True)  # 0.5 s at 100 tokens/s
    streaming = asyncio.create_task(
        raw_request(port, "POST", "/v1/chat/completions", body, headers)
    )
    await eventually(lambda: sim.engine.running == 1, 5, "the stream is being generated")
    process.send_signal(signal.SIGTERM)
    stream = await asyncio.wait_for(streaming, 5)
    assert stream.status == 200
    assert stream.sse_data()[-1] == b"[DONE]"

    code = await asyncio.wait_for(process.wait(), 5)
    assert process.stderr is not None
    stderr = (await process.stderr.read()).decode()
    assert code == 0, stderr
    assert "Traceback" not in stderr
    assert not any(is_running(pid) for pid in workers), "a worker outlived the parent"
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_sigterm_during_worker_start_up_still_stops_everything(
    tmp_path: Path, sim: SimServer
) -> None:
    """SIGTERM as soon as the workers exist, before they are ready (a pod stopped at once)."""
    config = write_config(tmp_path / "lockgate.yaml", free_port(), sim.base_url)
    async with lockgate_serve(config) as process:
        deadline = time.monotonic() + 10
        # The workers and the ledger's flusher process; cheap enough to poll tightly.
        while len(forked_by(process.pid)) < WORKERS + 1:
            assert time.monotonic() < deadline, "the workers did not start"
            await asyncio.sleep(0)
        workers = children_of(process.pid)
        process.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(process.wait(), 3)
        except TimeoutError:
            alive = sorted(pid for pid in workers if is_running(pid))
            pytest.fail(f"SIGTERM was lost: the supervisor still waits for worker(s) {alive}")
        assert process.stderr is not None
        stderr = (await process.stderr.read()).decode()
        assert "Traceback" not in stderr, stderr
        assert code == 0
        assert not any(is_running(pid) for pid in workers)


async def test_workers_that_cannot_start_make_serve_fail_instead_of_restarting_forever(
    tmp_path: Path,
) -> None:
    """A port held by another program: every worker fails to bind, so serve must exit non-zero."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        config = write_config(tmp_path / "lockgate.yaml", port, "http://127.0.0.1:9/v1")
        async with lockgate_serve(config) as process:
            try:
                code = await asyncio.wait_for(process.wait(), 4)
            except TimeoutError:
                pytest.fail("serve kept restarting workers that can never bind the port")
            assert process.stderr is not None
            stderr = (await process.stderr.read()).decode()
            assert code != 0
            assert "address already in use" in stderr


async def test_several_workers_without_redis_refuse_to_start_when_limits_are_on(
    tmp_path: Path,
) -> None:
    """Per-worker counters would admit N times every limit: serve says so and exits."""
    config = write_config(tmp_path / "lockgate.yaml", free_port(), "http://127.0.0.1:9/v1")
    config.write_text(config.read_text().replace("  enabled: false\n", "  enabled: true\n"))
    async with lockgate_serve(config) as process:
        code = await asyncio.wait_for(process.wait(), 10)
        assert process.stderr is not None
        stderr = (await process.stderr.read()).decode()
    assert code != 0
    assert "there is no redis.url" in stderr
    assert "Traceback" not in stderr


def test_config_validate_accepts_a_good_file(tmp_path: Path) -> None:
    config = write_config(tmp_path / "good.yaml", 8080, "http://127.0.0.1:9/v1")
    result = subprocess.run(
        [*LOCKGATE, "config", "validate", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"{config}: OK (1 models, 1 deployments)" in result.stdout


def test_config_validate_rejects_an_unknown_key_naming_file_line_and_path(
    tmp_path: Path,
) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(
        """\
server:
  port: 8080
models:
  - name: sim-chat
    deployments:
      - name: sim-chat-d1
        base_url: http://127.0.0.1:9/v1
        timeout: {connect_s: 1}
""",
        encoding="utf-8",
    )
    result = subprocess.run(
        [*LOCKGATE, "config", "validate", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert str(config) in result.stderr
    assert "line 8" in result.stderr
    assert "models[0].deployments[0].timeout" in result.stderr
    assert "unknown key" in result.stderr
