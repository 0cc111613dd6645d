"""The CloudEvents push: retried until accepted, resumed after a restart, one pusher at a time,
nothing skipped, ids deterministic; against a real loopback receiver that fails at first."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from lockgate.config.spec import CloudEventsPushSpec
from lockgate.metering.cloudevents_push import CloudEventsPusher, PushSettings, push_settings
from lockgate.metering.export import Subject, event_id
from lockgate.metering.record import UsageRecord
from lockgate.store import Store
from tests.metering.receiver import Receiver, receiver
from tests.metering.support import record

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)


def _records(prefix: str, count: int) -> list[UsageRecord]:
    # Times out of order: the queue, not the time, decides what is left to push.
    return [
        record(f"{prefix}{i:04d}", at=T0 + timedelta(seconds=(i * 7919) % count))
        for i in range(count)
    ]


def _pusher(store: Store, endpoint: Receiver, owner: str, **options: object) -> CloudEventsPusher:
    defaults: dict[str, object] = {
        "headers": (("authorization", "Bearer om_test"),),
        "source": "//lockgate/test",
        "batch_size": 100,
        "interval_s": 0.02,
        "backoff_max_s": 0.05,
        "lease_ttl_s": 2.0,
    }
    settings = PushSettings(url=endpoint.url, **{**defaults, **options})  # type: ignore[arg-type]
    return CloudEventsPusher(settings, store.usage, store.usage.push, owner=owner)


async def _until(condition: Callable[[], bool], timeout_s: float = 8.0) -> None:
    """Poll: the pusher and the receiver expose counters, not events to wait on."""
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def test_events_reach_a_failing_endpoint_exactly_as_queued(store: Store) -> None:
    records = _records("a", 250)
    assert await store.usage.insert_many(records[:180], queue_for_push=True) == 180
    # A re-sent batch queues nothing new; a record flushed while no push is configured
    # is not queued.
    assert await store.usage.insert_many(records[100:250], queue_for_push=True) == 70
    await store.usage.insert_many([record("not-queued", at=T0)])
    async with receiver(fail_first=3) as endpoint:
        pusher = _pusher(store, endpoint, "worker-1")
        pusher.start()
        try:
            await _until(lambda: len(endpoint.event_ids()) >= 250)
            await _until(lambda: pusher.stats.pushed >= 250)
        finally:
            await pusher.close()
    ids = endpoint.event_ids()
    assert Counter(ids) == Counter(event_id(r.record_id) for r in records)  # no more, no less
    assert endpoint.attempts == 3 + len(endpoint.accepted)
    first = endpoint.accepted[0]
    assert first.path == "/api/v1/events"
    assert first.headers["content-type"] == "application/cloudevents-batch+json"
    assert first.headers["authorization"] == "Bearer om_test"
    event = first.events()[0]
    assert (event["specversion"], event["source"], event["type"]) == (
        "1.0",
        "//lockgate/test",
        "io.lockgate.usage.v1",
    )
    assert pusher.stats.failures >= 3
    assert await store.usage.push.backlog() == 0
    assert await store.usage.push.pushed_events("cloudevents") == 250


async def test_a_restarted_pusher_resumes_and_only_the_lease_holder_pushes(store: Store) -> None:
    await store.usage.insert_many(_records("b", 300), queue_for_push=True)
    async with receiver() as endpoint:
        first = _pusher(store, endpoint, "replica-1", content_mode="structured", batch_size=40)
        second = _pusher(store, endpoint, "replica-2", content_mode="structured", batch_size=40)
        first.start()
        await _until(lambda: first.stats.is_leader and len(endpoint.accepted) >= 40)
        second.start()
        await asyncio.sleep(0.1)
        assert not second.stats.is_leader  # the lease is held: the second one waits
        await first.close()  # a restart, mid-queue: it gives the lease up
        await _until(lambda: second.stats.is_leader)
        async with asyncio.timeout(8):
            while await store.usage.push.backlog():  # noqa: ASYNC110 - the store's count
                await asyncio.sleep(0.01)
        await second.close()
    ids = endpoint.event_ids()
    assert set(ids) == {event_id(f"b{i:04d}") for i in range(300)}
    # Structured mode: one event per request. A batch cut short by the restart may be sent
    # again, and its events carry the same ids, which is what lets the consumer drop them.
    assert all(
        r.headers["content-type"] == "application/cloudevents+json" for r in endpoint.accepted
    )
    assert len(ids) - len(set(ids)) <= 40
    assert await store.usage.push.backlog() == 0


async def test_an_expired_lease_is_taken_over(store: Store) -> None:
    push = store.usage.push
    now = datetime.now(UTC)
    assert await push.take_lease("cloudevents", "dead", now=now, ttl_s=1)
    assert not await push.take_lease("cloudevents", "alive", now=now, ttl_s=1)
    assert await push.take_lease("cloudevents", "alive", now=now + timedelta(seconds=2), ttl_s=1)
    assert await push.take_lease("cloudevents", "alive", now=now + timedelta(seconds=2), ttl_s=1)


def test_the_config_section_reads_secret_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENMETER_AUTHORIZATION", "Bearer om_live")
    spec = CloudEventsPushSpec.model_validate(
        {
            "url": "https://openmeter.example/api/v1/events",
            "headers": {"Authorization": {"env": "OPENMETER_AUTHORIZATION"}, "X-Team": "billing"},
            "subject": "project",
        }
    )
    settings = push_settings(spec)
    assert settings.headers == (("authorization", "Bearer om_live"), ("x-team", "billing"))
    assert settings.subject is Subject.PROJECT
    for wrong in ({"url": "ftp://x"}, {"url": "http://x", "batch": 5}):
        with pytest.raises(ValidationError):
            CloudEventsPushSpec.model_validate(wrong)
    monkeypatch.delenv("OPENMETER_AUTHORIZATION")
    with pytest.raises(ValueError, match="OPENMETER_AUTHORIZATION"):
        push_settings(spec)
