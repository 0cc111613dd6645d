"""Operator commands as an operator runs them: real ``lockgate`` processes against a
deployment's config (SQLite or PostgreSQL), and a real multi-worker gateway that must
honour what they change. Shared by the CLI tests; ``deployment`` is in conftest."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg

from lockgate.tenancy.model import AuditEntry
from tests.support import RawResponse, raw_request

KEY = re.compile(r"lg_[a-z2-7]{16}_[a-z2-7]{52}")
MODEL = "sim-chat"


@dataclass
class Run:
    code: int
    out: str
    err: str

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.out.splitlines()]

    def one(self) -> dict[str, Any]:
        [record] = self.lines()
        return record


@dataclass
class Deployment:
    """A gateway config on disk plus the environment its processes run with."""

    config: Path
    env: dict[str, str]
    data_dir: Path
    database_url: str | None  # None: the embedded SQLite database in data_dir

    async def cli(self, command: str, expect: int | None = 0) -> Run:
        """``lockgate <command> --config <file>``, checking the exit code (unless None)."""
        args = shlex.split(command)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "lockgate",
            *args,
            "--config",
            str(self.config),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.env,
        )
        out, err = await asyncio.wait_for(process.communicate(), 30)
        run = Run(process.returncode or 0, out.decode(), err.decode())
        if expect is not None:
            assert run.code == expect, f"lockgate {command} -> {run.code}\n{run.err}"
        return run

    async def alter_audit_entry(self, seq: int) -> None:
        """Tamper with the database behind the gateway's back, as an intruder would."""
        await self._execute('UPDATE audit_log SET after = \'{"status": "active"}\'', seq)

    async def delete_audit_entry(self, seq: int) -> None:
        await self._execute("DELETE FROM audit_log", seq)

    async def _execute(self, statement: str, seq: int) -> None:
        if self.database_url is None:
            with closing(sqlite3.connect(self.data_dir / "lockgate.db")) as conn:
                conn.execute(statement + " WHERE seq = ?", (seq,))
                conn.commit()
            return
        conn = await asyncpg.connect(self.database_url)
        try:
            await conn.execute(statement + " WHERE seq = $1", seq)
        finally:
            await conn.close()


def clean_env() -> Iterator[tuple[str, str]]:
    """The test runner's environment without LOCKGATE_* settings that would leak in."""
    return ((k, v) for k, v in os.environ.items() if not k.startswith("LOCKGATE_"))


@asynccontextmanager
async def gateway(deployment: Deployment, log: Path) -> AsyncIterator[asyncio.Task[int]]:
    """``lockgate serve`` on the deployment's config, started in the background: the
    task gives its port once it listens (meanwhile the test can run commands)."""
    with log.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "lockgate",
            "serve",
            "--config",
            str(deployment.config),
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            env=deployment.env,
        )

        async def listening() -> int:
            assert process.stdout is not None
            line = await asyncio.wait_for(process.stdout.readline(), 30)
            found = re.search(rb"listening on http://127\.0\.0\.1:(\d+)", line)
            assert found is not None, f"{line!r}\n{_read(log)}"
            return int(found.group(1))

        ready = asyncio.create_task(listening())
        try:
            yield ready
        finally:
            ready.cancel()
            process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(process.wait(), 20) == 0, _read(log)


def _read(log: Path) -> str:
    return log.read_text(errors="replace")


async def gather(commands: dict[str, Awaitable[Run]]) -> dict[str, Run]:
    """Run independent commands at once (each process spends ~1 s importing)."""
    results = await asyncio.gather(*commands.values())
    return dict(zip(commands, results, strict=True))


async def chat(port: int, key: str) -> RawResponse:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    return await raw_request(
        port,
        "POST",
        "/v1/chat/completions",
        json.dumps(body).encode(),
        {"authorization": f"Bearer {key}", "content-type": "application/json"},
    )


async def statuses(port: int, key: str, count: int = 8) -> list[int]:
    """Several requests on fresh connections, so both workers answer some of them."""
    return [(await chat(port, key)).status for _ in range(count)]


async def refused_within_1s(port: int, key: str, code: str, since: float) -> None:
    """One second after ``since`` (a command's exit), every worker must refuse ``key``.

    Each worker cached the key before the change, for ``auth.key_cache_ttl_s`` (60 s):
    only the invalidation the command published can make them drop it this soon.
    """
    loop = asyncio.get_running_loop()
    await asyncio.sleep(max(0.0, since + 1.0 - loop.time()))
    responses = [await chat(port, key) for _ in range(8)]
    assert [r.status for r in responses] == [401] * 8, [r.body for r in responses]
    assert all(json.loads(r.body)["error"]["code"] == code for r in responses)


def only_key(run: Run) -> str:
    keys = KEY.findall(run.out)
    assert len(keys) == 1, run.out
    return str(keys[0])


def entry_of(line: dict[str, Any]) -> AuditEntry:
    return AuditEntry(**{**line, "at": datetime.fromisoformat(line["at"])})
