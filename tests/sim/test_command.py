"""The ``lockgate sim`` command: flags over YAML over defaults, and a real process."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

import orjson
import pytest

from lockgate.sim.command import add_arguments, build_config, run


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_defaults() -> None:
    args = parse()
    assert (args.host, args.port) == ("127.0.0.1", 9000)
    config = build_config(args)
    assert (config.ttft_ms, config.tokens_per_s, config.capacity) == (50, 50, 64)


def test_flags_override_yaml(tmp_path: Path) -> None:
    path = tmp_path / "sim.yaml"
    path.write_text("ttft_ms: 5\ncapacity: 3\nfault_rates:\n  error-500: 0.1\n", encoding="utf-8")
    args = parse("--config", str(path), "--capacity", "8", "--model", "a", "--model", "b")
    config = build_config(args)
    assert config.ttft_ms == 5
    assert config.capacity == 8
    assert config.models == ("a", "b")
    assert config.fault_rates == {"error-500": 0.1}


def test_bad_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "sim.yaml"
    path.write_text("ttft: 5\n", encoding="utf-8")
    assert run(parse("--config", str(path))) == 2
    assert "ttft" in capsys.readouterr().err


async def test_process_serves_until_sigint() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "lockgate.sim.command",
        "--port",
        "0",
        "--ttft-ms",
        "0",
        "--tokens-per-s",
        "0",
        "--model",
        "demo",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(10):
            line = (await proc.stdout.readline()).decode()
        assert line.startswith("lockgate sim listening on http://127.0.0.1:")
        base = line.strip().rsplit(" ", 1)[1]
        assert base.endswith("/v1")
        port = int(base.rsplit(":", 1)[1].split("/")[0])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /v1/models HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        response = await reader.read()
        writer.close()
        await writer.wait_closed()
        assert response.startswith(b"HTTP/1.1 200")
        body = orjson.loads(response.split(b"\r\n\r\n", 1)[1])
        assert [m["id"] for m in body["data"]] == ["demo"]
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(10):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
