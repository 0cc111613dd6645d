"""Redis going away: killed subscriptions, a restarted or frozen server, close during reconnect.

Tests that stop or freeze a server use a private ``redis-server`` on a free
port, so the shared one (and whoever else uses it) is never disturbed.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from pathlib import Path

import pytest
from redis.asyncio import Redis

from lockgate.invalidation import Backoff, InvalidationUnavailable, RedisBus
from tests.invalidation.conftest import Buses
from tests.invalidation.support import FAST_BACKOFF, Recorder, assert_no_new_tasks


@pytest.mark.parametrize("shared_buses", ["redis"], indirect=True)
async def test_redis_listener_killed_by_the_server_reconnects_and_flushes(
    shared_buses: Buses,
) -> None:
    before = asyncio.all_tasks()
    publisher, subscriber = shared_buses.new(), shared_buses.new()
    flushed, received = Recorder(), Recorder()
    subscriber.on_reconnect(flushed)
    subscriber.subscribe("keys", received)
    await publisher.start()
    await subscriber.start()
    admin = Redis.from_url(shared_buses.params["url"])
    try:
        # Only our listener: the server is shared with other test runs.
        name = f"lockgate-invalidation-listen-{subscriber.instance_id}"
        [client_id] = [c["id"] for c in await admin.client_list() if c["name"] == name]
        killed_at = time.monotonic()
        kill = ("CLIENT", "KILL", "TYPE", "pubsub", "ID", client_id)
        assert await admin.execute_command(*kill)  # type: ignore[no-untyped-call]

        await flushed.wait_for(1, timeout_s=3)
        reconnect_s = time.monotonic() - killed_at
        await publisher.publish("keys", "after-kill")
        await received.wait_for(1)
        assert received.keys == ["after-kill"]
        assert flushed.calls == 1
        assert reconnect_s < 1.5
    finally:
        await admin.aclose()
    await shared_buses.close()
    await assert_no_new_tasks(before)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _start_redis(port: int, directory: Path) -> asyncio.subprocess.Process:
    server = await asyncio.create_subprocess_exec(
        "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
        "--appendonly", "no", "--dir", str(directory),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    client = Redis(port=port)
    try:
        async with asyncio.timeout(5):
            while True:
                try:
                    await client.ping()
                    return server
                except OSError:
                    await asyncio.sleep(0.05)
    finally:
        await client.aclose()


async def _stop(server: asyncio.subprocess.Process) -> None:
    if server.returncode is None:
        server.terminate()
        await server.wait()


async def test_redis_restart_fails_publishes_while_down_then_recovers(
    redis_url: str, tmp_path: Path
) -> None:
    """A private redis-server, so stopping it disturbs nobody."""
    port = _free_port()
    url = f"redis://127.0.0.1:{port}/0"
    server = await _start_redis(port, tmp_path)
    publisher = RedisBus(url, "restart:", backoff=Backoff(**FAST_BACKOFF))
    subscriber = RedisBus(url, "restart:", backoff=Backoff(**FAST_BACKOFF))
    flushed, received = Recorder(), Recorder()
    subscriber.on_reconnect(flushed)
    subscriber.subscribe("keys", received)
    try:
        await publisher.start()
        await subscriber.start()
        await _stop(server)

        local = Recorder()
        publisher.subscribe("keys", local)
        with pytest.raises(InvalidationUnavailable, match="was not sent"):
            await publisher.publish("keys", "while-down")
        assert local.keys == ["while-down"]  # this process still dropped its entry

        server = await _start_redis(port, tmp_path)
        await flushed.wait_for(1, timeout_s=3)
        await publisher.publish("keys", "after-restart")
        await received.wait_for(1)
        assert received.keys == ["after-restart"]
    finally:
        await publisher.close()
        await subscriber.close()
        await _stop(server)


async def test_redis_that_stops_answering_is_detected_by_ping(tmp_path: Path) -> None:
    """A frozen server keeps the TCP connection open: only the PING deadline notices."""
    port = _free_port()
    url = f"redis://127.0.0.1:{port}/0"
    server = await _start_redis(port, tmp_path)
    backoff = Backoff(**FAST_BACKOFF)
    publisher = RedisBus(url, "frozen:", backoff=Backoff(**FAST_BACKOFF))
    subscriber = RedisBus(
        url, "frozen:", ping_interval_s=0.2, connect_timeout_s=0.5, backoff=backoff
    )
    flushed, received = Recorder(), Recorder()
    subscriber.on_reconnect(flushed)
    subscriber.subscribe("keys", received)
    try:
        await publisher.start()
        await subscriber.start()
        server.send_signal(signal.SIGSTOP)
        await asyncio.sleep(1.0)  # > 2 ping intervals: the old connection is given up
        server.send_signal(signal.SIGCONT)

        await flushed.wait_for(1, timeout_s=3)
        await publisher.publish("keys", "after-freeze")
        await received.wait_for(1)
        assert received.keys == ["after-freeze"]
    finally:
        server.send_signal(signal.SIGCONT)
        await publisher.close()
        await subscriber.close()
        await _stop(server)


async def test_close_while_reconnecting_returns_promptly(tmp_path: Path) -> None:
    port = _free_port()
    server = await _start_redis(port, tmp_path)
    before = asyncio.all_tasks()
    bus = RedisBus(f"redis://127.0.0.1:{port}/0", "closing:", backoff=Backoff(**FAST_BACKOFF))
    try:
        await bus.start()
    finally:
        await _stop(server)
    await asyncio.sleep(0.3)  # the listener is now failing to reconnect, with back-off

    async with asyncio.timeout(1):
        await bus.close()
    await assert_no_new_tasks(before)
