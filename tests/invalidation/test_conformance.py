"""The contract every bus keeps (one suite, run against each implementation)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from lockgate.invalidation import (
    MAX_KEY_BYTES,
    InvalidationUnavailable,
    PostgresBus,
    RedisBus,
    SqliteBus,
)
from tests.invalidation.conftest import Buses
from tests.invalidation.support import (
    LatencySample,
    Recorder,
    assert_no_new_tasks,
    measure_cross_process,
)

# Long enough for an echo of our own message to come back on every transport
# (SQLite polls every 200 ms), so "exactly once" is a real check.
ECHO_WINDOW_S = 0.35


async def test_own_subscribers_run_before_publish_returns_exactly_once(any_buses: Buses) -> None:
    bus = any_buses.new()
    first, second, other_topic = Recorder(), Recorder(), Recorder()
    bus.subscribe("keys", first)
    bus.subscribe("keys", second)
    bus.subscribe("limits", other_topic)
    await bus.start()

    await bus.publish("keys", "k1")

    assert first.keys == ["k1"]
    assert second.keys == ["k1"]
    await asyncio.sleep(ECHO_WINDOW_S)
    assert first.keys == second.keys == ["k1"]  # the transport's echo is not delivered again
    assert other_topic.keys == []


async def test_every_subscriber_of_another_bus_in_this_process_receives(
    shared_buses: Buses,
) -> None:
    publisher, subscriber = shared_buses.new(), shared_buses.new()
    first, second = Recorder(), Recorder()
    subscriber.subscribe("keys", first)
    subscriber.subscribe("keys", second)
    await publisher.start()
    await subscriber.start()

    await publisher.publish("keys", "k1")
    await publisher.publish("keys", "k2")

    await first.wait_for(2)
    await second.wait_for(2)
    assert first.keys == second.keys == ["k1", "k2"]


async def test_topics_are_filtered(any_buses: Buses) -> None:
    publisher = any_buses.new()
    subscriber = publisher if any_buses.kind == "inprocess" else any_buses.new()
    keys, limits = Recorder(), Recorder()
    subscriber.subscribe("keys", keys)
    subscriber.subscribe("limits", limits)
    await publisher.start()
    await subscriber.start()

    await publisher.publish("routing", "r1")
    await publisher.publish("keys", "k1")

    # Each transport keeps order, so "routing" would have arrived before "k1".
    await keys.wait_for(1)
    assert keys.keys == ["k1"]
    assert limits.keys == []


async def test_delivery_to_another_os_process_within_one_second(
    shared_buses: Buses, latencies: list[LatencySample]
) -> None:
    bus = shared_buses.new()
    await bus.start()

    sample = await measure_cross_process(bus, shared_buses.kind, shared_buses.params, count=5)

    latencies.append(sample)
    assert max(sample.latencies_ms) < 1000, sample.summary()


async def test_close_leaves_no_pending_tasks_and_is_idempotent(any_buses: Buses) -> None:
    before = asyncio.all_tasks()
    bus, other = any_buses.new(), any_buses.new()
    received = Recorder()
    other.subscribe("keys", received)
    await bus.start()
    await other.start()
    await bus.publish("keys", "k1")
    if any_buses.kind != "inprocess":
        await received.wait_for(1)

    await bus.close()
    await other.close()
    await bus.close()

    await assert_no_new_tasks(before)


async def test_a_failing_handler_does_not_stop_the_others(
    any_buses: Buses, caplog: pytest.LogCaptureFixture
) -> None:
    bus = any_buses.new()
    received = Recorder()

    def broken(key: str) -> None:
        raise RuntimeError(f"cannot drop {key}")

    bus.subscribe("keys", broken)
    bus.subscribe("keys", received)
    await bus.start()

    with caplog.at_level(logging.ERROR, logger="lockgate.invalidation"):
        await bus.publish("keys", "k1")

    assert received.keys == ["k1"]
    assert "handler for topic 'keys' failed" in caplog.text


@pytest.mark.parametrize(
    ("topic", "key"),
    [("", "k"), ("with space", "k"), ("t" * 65, "k"), ("keys", "x" * (MAX_KEY_BYTES + 1))],
)
async def test_malformed_messages_are_rejected_before_sending(
    any_buses: Buses, topic: str, key: str
) -> None:
    bus = any_buses.new()
    received = Recorder()
    bus.subscribe("keys", received)

    with pytest.raises(ValueError, match=r"invalid|bytes"):
        await bus.publish(topic, key)
    assert received.keys == []


def _unreachable(kind: str, tmp_path: Path) -> RedisBus | PostgresBus | SqliteBus:
    """A bus whose transport cannot be reached: a closed port, or a path under a file."""
    if kind == "redis":
        return RedisBus("redis://127.0.0.1:1/0", "unreachable:")
    if kind == "postgres":
        return PostgresBus("postgresql://postgres@127.0.0.1:1/postgres")
    (tmp_path / "a-file").write_text("not a directory")
    return SqliteBus(tmp_path / "a-file" / "invalidation.sqlite3")


@pytest.mark.parametrize("kind", ["redis", "postgres", "sqlite"])
async def test_unreachable_transport_fails_start_and_publish_clearly(
    kind: str, tmp_path: Path
) -> None:
    bus = _unreachable(kind, tmp_path)
    local = Recorder()
    bus.subscribe("keys", local)
    before = asyncio.all_tasks()
    try:
        with pytest.raises(InvalidationUnavailable, match="cannot listen") as started:
            await bus.start()
        assert started.value.status == 503
        with pytest.raises(InvalidationUnavailable, match="'keys' was not sent"):
            await bus.publish("keys", "k1")
        assert local.keys == ["k1"]  # this process still dropped its own entry
    finally:
        await bus.close()
    await assert_no_new_tasks(before)
