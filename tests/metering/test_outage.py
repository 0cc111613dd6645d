"""The store goes away under load: records wait in the journal and arrive exactly once.

Runs against a private PostgreSQL (``private_postgres.py``) that the test stops
for several seconds while requests keep being settled, then starts again.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from lockgate.metering.ledger import UsageLedger
from lockgate.store import Store, upgrade
from lockgate.store.database import PoolSettings
from lockgate.store.repositories.usage import Granularity
from lockgate.usage import Usage
from tests.metering.private_postgres import PrivatePostgres
from tests.metering.support import settled_context
from tests.metering.test_ledger import EVER, all_records

# The figure is 30 s; a few seconds exercise the same path in CI.
OUTAGE_S = float(os.environ.get("LOCKGATE_TEST_OUTAGE_S", "4"))


@pytest.fixture
def postgres() -> Iterator[PrivatePostgres]:
    with PrivatePostgres() as server:
        yield server


@pytest.mark.timeout(90 + OUTAGE_S)
async def test_records_written_while_the_database_is_down_arrive_once_it_is_back(
    postgres: PrivatePostgres, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    admin = await asyncpg.connect(postgres.admin_dsn)
    await admin.execute("CREATE DATABASE lockgate")
    await admin.close()
    url = postgres.url("lockgate")
    await upgrade(url)
    store = await Store.open(url, pool=PoolSettings(connect_timeout_s=1.0, command_timeout_s=5.0))
    ledger = UsageLedger(
        tmp_path / "journal.db", store.usage, flush_interval_s=0.02, backoff_max_s=0.5
    )
    await ledger.start()
    settled: list[tuple[str, int, int]] = []

    def settle(n: int) -> None:
        request_id = f"req-{n}"
        usage = Usage(prompt_tokens=50 + n % 101, completion_tokens=n % 29)
        ledger.settle(settled_context(request_id, usage=usage))
        settled.append((request_id, usage.prompt_tokens, usage.completion_tokens))

    try:
        for n in range(200):
            settle(n)
        async with asyncio.timeout(20):
            await ledger.flush()

        with caplog.at_level(logging.WARNING):
            await asyncio.to_thread(postgres.stop)
            loop = asyncio.get_running_loop()
            outage_ends = loop.time() + OUTAGE_S
            n = 200
            while loop.time() < outage_ends:  # traffic goes on; every record is acknowledged
                for _ in range(20):
                    settle(n)
                    n += 1
                await ledger.sync()
                await asyncio.sleep(0.05)
            assert ledger.stats is not None
            assert not ledger.stats.is_store_available
            assert ledger.stats.failures > 0
            assert ledger.flusher is not None
            waiting = await ledger.flusher.pending()
            assert waiting == n - 200, "what was settled during the outage waits in the journal"

            await asyncio.to_thread(postgres.start)
            async with asyncio.timeout(30):
                await ledger.flush()
        assert ledger.stats.is_store_available
        assert "the store is unavailable" in caplog.text
        assert "the store is back" in caplog.text
    finally:
        await ledger.close()

    records = await all_records(store)
    counts = Counter(r.request_id for r in records)
    assert set(counts) == {request_id for request_id, _, _ in settled}
    assert set(counts.values()) == {1}
    assert sum(r.prompt_tokens for r in records) == sum(p for _, p, _ in settled)
    assert sum(r.completion_tokens for r in records) == sum(c for _, _, c in settled)
    buckets = await store.usage.aggregate(
        organization_id="org_a", start=EVER[0], end=EVER[1], granularity=Granularity.MONTH
    )
    assert sum(b.requests for b in buckets) == len(settled)
    await store.close()
