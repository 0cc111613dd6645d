"""PostgreSQL dropping our sessions: the listener reconnects and flushes; publishing recovers."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from tests.invalidation.conftest import Buses
from tests.invalidation.support import Recorder, assert_no_new_tasks


async def _backend_pid(dsn: str, application_name: str) -> int:
    admin = await asyncpg.connect(dsn)
    try:
        return int(
            await admin.fetchval(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1", application_name
            )
        )
    finally:
        await admin.close()


async def _terminate(dsn: str, pid: int) -> None:
    admin = await asyncpg.connect(dsn)
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await admin.close()


@pytest.mark.parametrize("shared_buses", ["postgres"], indirect=True)
async def test_postgres_listener_terminated_reconnects_and_flushes(shared_buses: Buses) -> None:
    before = asyncio.all_tasks()
    dsn = shared_buses.params["dsn"]
    publisher, subscriber = shared_buses.new(), shared_buses.new()
    flushed, received = Recorder(), Recorder()
    subscriber.on_reconnect(flushed)
    subscriber.subscribe("keys", received)
    await publisher.start()
    await subscriber.start()
    name = f"lockgate-invalidation-listen-{subscriber.instance_id}"
    old_pid = await _backend_pid(dsn, name)

    terminated_at = time.monotonic()
    await _terminate(dsn, old_pid)
    await flushed.wait_for(1, timeout_s=3)
    reconnect_s = time.monotonic() - terminated_at

    await publisher.publish("keys", "after-terminate")
    await received.wait_for(1)
    assert received.keys == ["after-terminate"]
    assert await _backend_pid(dsn, name) != old_pid
    assert reconnect_s < 1.5
    await shared_buses.close()
    await assert_no_new_tasks(before)


@pytest.mark.parametrize("shared_buses", ["postgres"], indirect=True)
async def test_postgres_publish_survives_a_lost_publisher_connection(
    shared_buses: Buses,
) -> None:
    dsn = shared_buses.params["dsn"]
    publisher, subscriber = shared_buses.new(), shared_buses.new()
    received = Recorder()
    subscriber.subscribe("keys", received)
    await publisher.start()
    await subscriber.start()
    await publisher.publish("keys", "k1")
    await _terminate(
        dsn, await _backend_pid(dsn, f"lockgate-invalidation-publish-{publisher.instance_id}")
    )

    await publisher.publish("keys", "k2")  # a fresh connection, without an error

    await received.wait_for(2)
    assert received.keys == ["k1", "k2"]
