"""The command line as an operator uses it: real processes, real ports."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sys
from pathlib import Path

import openai

from tests.support import raw_request


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def wait_for_line(stream: asyncio.StreamReader, needle: str, timeout_s: float) -> str:
    seen = ""
    async with asyncio.timeout(timeout_s):
        while needle not in seen:
            line = await stream.readline()
            if not line:
                raise AssertionError(f"process ended before printing {needle!r}:\n{seen}")
            seen += line.decode()
    return seen


async def test_demo_starts_gateway_and_engine_and_prints_working_examples() -> None:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "lockgate",
        "demo",
        "--port",
        str(port),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        assert process.stdout is not None
        banner = await wait_for_line(process.stdout, "Press Ctrl-C", 20)
        assert f"http://127.0.0.1:{port}/v1/chat/completions" in banner
        assert f'base_url="http://127.0.0.1:{port}/v1"' in banner
        key = re.search(r"LOCKGATE_API_KEY=(lg_\S+)", banner)
        assert key is not None, banner
        assert f"authorization: Bearer {key.group(1)}" in banner
        unauthenticated = await raw_request(port, "POST", "/v1/chat/completions", b"{}")
        assert unauthenticated.status == 401
        async with openai.AsyncOpenAI(
            base_url=f"http://127.0.0.1:{port}/v1", api_key=key.group(1), max_retries=0
        ) as client:
            stream = await client.chat.completions.create(
                model="demo-chat", messages=[{"role": "user", "content": "Hello!"}], stream=True
            )
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text
        # Everything it logged so far: a demo that works but prints tracebacks is broken.
        logged = await read_available(process.stdout)
        assert "Traceback" not in banner + logged, banner + logged
    finally:
        process.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(process.wait(), 10) == 0


async def read_available(stream: asyncio.StreamReader) -> str:
    """What ``stream`` says within the next 1.5 s, without waiting for its end."""
    chunks: list[bytes] = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(1.5):
            while chunk := await stream.read(65536):
                chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


async def test_sim_command_serves_until_terminated() -> None:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "lockgate",
        "sim",
        "--port",
        str(port),
        "--ttft-ms",
        "0",
        "--tokens-per-s",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        assert process.stdout is not None
        await wait_for_line(process.stdout, "lockgate sim listening", 20)
        response = await raw_request(port, "GET", "/health")
        assert response.status == 200
    finally:
        process.terminate()
        assert await asyncio.wait_for(process.wait(), 10) == 0


async def test_serve_refuses_an_invalid_config_with_a_readable_error(tmp_path: Path) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text("server:\n  prot: 8080\n")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "lockgate",
        "serve",
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "LOCKGATE_PORT": "0"},
    )
    _, err = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 2
    assert f"invalid configuration in {config}" in err.decode()
    assert "line 2: server.prot: unknown key" in err.decode()
