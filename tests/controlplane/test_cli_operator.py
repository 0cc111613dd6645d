"""Operator commands as an operator runs them: real ``lockgate`` processes against SQLite
and PostgreSQL, next to a real multi-worker gateway that must honour what they change.

Each CLI process costs about a second (imports), so independent commands run
concurrently and one scenario walks the whole life of a key per backend.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
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
import pytest
import yaml
from sqlalchemy.engine import make_url

from lockgate.sim import SimServer
from lockgate.tenancy.audit import hash_of
from lockgate.tenancy.model import AuditEntry
from tests.databases import create_database, drop_database, postgres_admin_dsn
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


def _clean_env() -> Iterator[tuple[str, str]]:
    """The test runner's environment without LOCKGATE_* settings that would leak in."""
    return ((k, v) for k, v in os.environ.items() if not k.startswith("LOCKGATE_"))


@pytest.fixture(params=["sqlite", "postgresql"])
async def deployment(
    request: pytest.FixtureRequest, tmp_path: Path, sim: SimServer
) -> AsyncIterator[Deployment]:
    data_dir = tmp_path / "data"
    config = tmp_path / "gateway.yaml"
    spec = {
        # Two workers: each caches keys, and on SQLite they share the polled bus log.
        "server": {"host": "127.0.0.1", "port": 0, "workers": 2, "data_dir": str(data_dir)},
        "auth": {"allow_anonymous": False},
        "models": [{"name": MODEL, "deployments": [{"name": "d1", "base_url": sim.base_url}]}],
    }
    config.write_text(yaml.safe_dump(spec))
    env = dict(_clean_env())
    if request.param == "sqlite":
        yield Deployment(config, env, data_dir, None)
        return
    admin_dsn = postgres_admin_dsn()
    url = await create_database(admin_dsn)
    # Through the environment, not the file: the commands must apply overrides as serve does.
    env["LOCKGATE_DATABASE_URL"] = url
    env["LOCKGATE_API_KEY_PEPPER"] = "hex:" + secrets.token_hex(32)
    try:
        yield Deployment(config, env, data_dir, url)
    finally:
        await drop_database(admin_dsn, make_url(url).database or "")


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


async def test_operator_lifecycle_reaches_the_running_gateway(
    deployment: Deployment, tmp_path: Path
) -> None:
    d = deployment
    # Checks that do not depend on the database (usage errors, listings, --force)
    # run once, on SQLite, to keep the suite fast.
    extras = d.database_url is None
    loop = asyncio.get_running_loop()
    boot = await d.cli("admin bootstrap")
    root_key = only_key(boot)
    assert "shown only now" in boot.out
    assert re.search(r"role\s+superadmin", boot.out)

    async with gateway(d, tmp_path / "gateway.log") as listening:
        commands = {
            "acme": d.cli("orgs create acme --json"),
            "web": d.cli(f"projects create --org operators web --allow-model {MODEL}"),
        }
        if extras:
            commands["again"] = d.cli("admin bootstrap", expect=1)
        r = await gather(commands)
        port = await listening
        acme = r["acme"].one()
        assert acme["name"] == "acme"
        assert acme["id"].startswith("org_")
        assert re.search(rf"allowed models\s+{MODEL}", r["web"].out)
        if extras:
            assert "already bootstrapped" in r["again"].err
            assert len(r["again"].err.strip().splitlines()) == 1
            assert not KEY.search(r["again"].out + r["again"].err)
        assert await statuses(port, root_key, 2) == [200, 200]

        commands = {
            "ci": d.cli(
                "keys create --org operators --project web --name ci --expires-in 30d"
                " --allow-cidr 127.0.0.1/32 --json"
            )
        }
        if extras:
            commands["mobile"] = d.cli(f"projects create --org {acme['id']} mobile")
        r = await gather(commands)
        created = r["ci"].one()
        ci_key, ci_id = created["key"], created["id"]
        assert KEY.fullmatch(ci_key)
        assert ci_key.startswith(f"lg_{ci_id}_")
        assert created["scopes"] == ["inference"]
        assert created["expires_at"] is not None
        assert await statuses(port, ci_key) == [200] * 8
        assert await statuses(port, root_key) == [200] * 8  # both workers cache both keys

        r = await gather(
            {
                "rotate": d.cli(f"keys rotate {ci_id} --org operators --json"),
                "disable": d.cli(f"keys disable {root_key[:19]} --org operators"),
            }
        )
        await refused_within_1s(port, root_key, "api_key_disabled", loop.time())
        rotated = r["rotate"].one()
        new_ci_key = rotated["key"]
        assert new_ci_key != ci_key
        assert new_ci_key.startswith(f"lg_{ci_id}_")
        assert rotated["previous_expires_at"] is not None
        assert not KEY.search(r["disable"].out)  # a key's id is shown, never its secret
        assert await statuses(port, new_ci_key, 4) == [200] * 4
        assert await statuses(port, ci_key, 4) == [200] * 4  # the old secret, in its grace

        commands = {
            "enable": d.cli(f"keys enable {root_key[3:19]} --org operators"),
            "list": d.cli("keys list --org operators --project web --json"),
        }
        if extras:
            commands["projects"] = d.cli("projects list --org acme --json")
            commands["orgs"] = d.cli("orgs list")
            commands["force"] = d.cli("admin bootstrap --force --json")
        r = await gather(commands)
        enabled_at = loop.time()
        [ci] = r["list"].lines()
        assert ci["id"] == ci_id
        assert ci["status"] == "active"
        assert ci["previous_expires_at"] is not None
        assert not {"secret_hash", "previous_secret_hash", "key"} & set(ci)
        if extras:
            assert [p["name"] for p in r["projects"].lines()] == ["mobile"]
            assert re.search(r"^ID\s+NAME\s+CREATED$", r["orgs"].out, re.MULTILINE)
            assert re.search(rf"^{acme['id']}\s+acme\s", r["orgs"].out, re.MULTILINE)
            second_root = r["force"].one()
            assert second_root["key"] != root_key
            assert second_root["organization_name"] == "operators"
            assert await statuses(port, second_root["key"], 2) == [200] * 2

        await d.cli(f"keys revoke {ci_id} --org operators")
        await refused_within_1s(port, new_ci_key, "api_key_revoked", loop.time())
        assert loop.time() > enabled_at + 1.0
        assert await statuses(port, root_key, 4) == [200] * 4  # enabled again everywhere

    commands = {"verify": d.cli("audit verify"), "export": d.cli("audit export")}
    if extras:
        commands |= {
            "acme": d.cli("audit export --org acme --since 2020-01-01T00:00:00Z"),
            "keys": d.cli("keys list --org operators"),
            "missing": d.cli("keys revoke aaaaaaaaaaaaaaaa --org acme", expect=1),
            "bad": d.cli(
                "keys create --org acme --project mobile --name x --expires-in soon", expect=2
            ),
        }
    r = await gather(commands)
    found = re.search(r"audit chain intact: (\d+) entries", r["verify"].out)
    assert found is not None, r["verify"].out
    lines = r["export"].lines()
    assert len(lines) == int(found.group(1))
    assert [e["seq"] for e in lines] == list(range(1, len(lines) + 1))
    assert all(hash_of(entry_of(e)) == e["entry_hash"] for e in lines)  # re-checkable offline
    assert all(e["actor"].startswith("cli:") for e in lines)
    actions = [e["action"] for e in lines]
    assert actions[:5] == [
        "organization.create",
        "project.create",
        "service_account.create",
        "role_binding.create",
        "api_key.create",
    ]
    assert {"api_key.rotate", "api_key.disabled", "api_key.active", "api_key.revoke"} <= set(
        actions
    )
    if extras:
        acme_lines = r["acme"].lines()
        assert [e["action"] for e in acme_lines] == ["organization.create", "project.create"]
        assert all(e["organization_id"] == acme["id"] for e in acme_lines)
        assert re.search(rf"^{ci_id}\s+ci\s+\S+\s+revoked\s", r["keys"].out, re.MULTILINE)
        assert "not found" in r["missing"].err
        assert len(r["missing"].err.strip().splitlines()) == 1
        assert "--expires-in" in r["bad"].err

    # Tampering: alter one entry (then, on SQLite, delete an earlier one): each is named.
    rotate_seq = next(e["seq"] for e in lines if e["action"] == "api_key.rotate")
    await d.alter_audit_entry(rotate_seq)
    altered = await d.cli("audit verify", expect=1)
    assert re.search(
        rf"broken at seq {rotate_seq} \(api_key\.rotate on api_key:{ci_id}\)", altered.out
    )
    if extras:
        await d.delete_audit_entry(3)
        deleted = (await d.cli("audit verify --json", expect=1)).one()
        assert deleted["intact"] is False
        assert deleted["seq"] == 3
        assert deleted["entry"]["seq"] == 4
        assert deleted["intact_entries"] == 2
