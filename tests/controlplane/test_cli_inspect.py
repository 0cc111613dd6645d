"""``lockgate keys debug``, ``lockgate inspect``: an operator traces a key across a running
two-worker gateway and reads one request back.

Real ``lockgate`` processes on SQLite and PostgreSQL. The session reaches both
workers through the deployment's bus; together they store exactly the number of
requests asked for, however the kernel spreads the connections.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

from lockgate.store import Store
from lockgate.store.repositories.request_debug import request_debug
from tests.controlplane.operator import Deployment, chat, gateway, gather, only_key


async def test_an_operator_traces_a_key_and_inspects_its_requests(
    deployment: Deployment, tmp_path: Path
) -> None:
    d = deployment
    root_key = only_key(await d.cli("admin bootstrap"))
    root_id = root_key.split("_")[1]
    url = d.database_url or f"sqlite+aiosqlite:///{d.data_dir / 'lockgate.db'}"
    async with gateway(d, tmp_path / "gateway.log") as listening:
        # While the gateway starts: its workers load active sessions when they start.
        debugging = await d.cli(f"keys debug {root_id} --org operators --requests 3 --json")
        started = debugging.one()
        port = await listening
        assert (started["requested"], started["remaining"]) == (3, 3)
        assert started["created_by"].startswith("cli:")
        store = await Store.open(url)
        try:
            debug = request_debug(store)
            deadline = time.monotonic() + 15
            while True:  # each worker hears of the session within a second or so
                assert (await chat(port, root_key)).status == 200
                [session] = await debug.list_sessions(organization_id=None, api_key_id=root_id)
                if session.remaining == 0:
                    break
                assert time.monotonic() < deadline, session
                await asyncio.sleep(0.05)
            for _ in range(8):  # after the session ran out, nothing more is kept
                assert (await chat(port, root_key)).status == 200
            await asyncio.sleep(0.6)  # a writer's interval, twice over
            captured = await debug.records_for_session(session.id)
            assert len(captured) == 3
            request_id = captured[0].request_id
            deadline = time.monotonic() + 10
            while not await debug.usage_for_request(request_id):  # the ledger flushes in ~1 s
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
        finally:
            await store.close()
        # Each command costs a process start: run the independent ones at once.
        r = await gather(
            {
                "json": d.cli(f"inspect {request_id} --json"),
                "text": d.cli(f"inspect {request_id}"),
                "missing": d.cli("inspect no-such-request", expect=1),
                "undebug": d.cli(f"keys undebug {root_id} --org operators"),
                "audit": d.cli("audit export"),
            }
        )
    found = r["json"].one()
    [usage] = found["usage_records"]
    assert (usage["model"], usage["deployment"], usage["status"]) == ("sim-chat", "d1", 200)
    [detail] = found["debug_records"]
    assert detail["detail"]["attempts"][0]["deployment"] == "d1"
    assert root_key.split("_")[2] not in str(found)
    text = r["text"].out
    assert "usage record:" in text
    assert re.search(r"model\s+sim-chat -> d1", text)
    assert re.search(r"attempt 1: d1 status 200 ok", text)
    assert "authorization: [redacted]" in text
    assert "no record of request" in r["missing"].out
    assert "no active debug session" in r["undebug"].out
    assert '"action":"api_key.debug_start"' in r["audit"].out.replace(" ", "")
