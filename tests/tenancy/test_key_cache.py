"""KeyCache: TTL, negative entries, miss budget, single flight, invalidation races."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime

import pytest

from lockgate.tenancy.key_cache import AuthBackendBusy, KeyCache, KeyGrant, Miss
from lockgate.tenancy.model import ApiKeyRecord, KeyStatus, Scope
from tests.tenancy.grants import grant_for


def grant(key_id: str, status: KeyStatus = KeyStatus.ACTIVE, project: str = "p") -> KeyGrant:
    record = ApiKeyRecord(
        id=key_id, organization_id="o", project_id=project, name="k", secret_hash=b"h",
        status=status, scopes=(Scope.INFERENCE,), allowed_models=(), created_at=datetime.now(UTC),
    )  # fmt: skip
    return grant_for(record)


class SlowLookup:
    def __init__(self) -> None:
        self.rows: dict[str, KeyGrant] = {}
        self.loads = 0
        self.gate = asyncio.Event()
        self.gate.set()

    async def load_key(self, key_id: str) -> KeyGrant | None:
        self.loads += 1
        row = self.rows.get(key_id)
        await self.gate.wait()
        return row


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_ttl_and_negative_entries() -> None:
    lookup, clock = SlowLookup(), Clock()
    cache = KeyCache(lookup, ttl_s=60, negative_ttl_s=5, clock=clock)
    lookup.rows["a"] = grant("a")
    assert await cache.get("a") is not None
    assert await cache.get("missing") is None
    assert await cache.get("missing") is None
    assert lookup.loads == 2
    clock.now += 6  # negative entry expired, positive still fresh
    await cache.get("a")
    await cache.get("missing")
    assert lookup.loads == 3
    clock.now += 60
    await cache.get("a")
    assert lookup.loads == 4


async def test_concurrent_misses_share_one_load() -> None:
    lookup = SlowLookup()
    lookup.rows["a"] = grant("a")
    lookup.gate.clear()
    cache = KeyCache(lookup)
    waiters = [asyncio.create_task(cache.get("a")) for _ in range(50)]
    await asyncio.sleep(0.01)
    lookup.gate.set()
    results = await asyncio.gather(*waiters)
    assert lookup.loads == 1
    assert all(r is results[0] for r in results)


async def test_flood_of_unknown_ids_is_bounded() -> None:
    lookup, clock = SlowLookup(), Clock()
    cache = KeyCache(lookup, unknown_loads_per_s=10, clock=clock)
    busy = 0
    for i in range(100):
        try:
            await cache.get(f"unknown-{i}")
        except AuthBackendBusy:
            busy += 1
    assert lookup.loads == 10
    assert busy == 90
    clock.now += 1.0
    await cache.get("unknown-again")
    assert lookup.loads == 11


async def test_refresh_of_a_known_key_does_not_spend_the_unknown_budget() -> None:
    lookup, clock = SlowLookup(), Clock()
    cache = KeyCache(lookup, ttl_s=1, unknown_loads_per_s=1, clock=clock)
    lookup.rows["a"] = grant("a")
    await cache.get("a")
    for _ in range(5):
        clock.now += 2
        assert await cache.get("a") is not None


async def test_invalidation_during_a_load_is_not_lost() -> None:
    lookup = SlowLookup()
    lookup.rows["a"] = grant("a")
    lookup.gate.clear()
    cache = KeyCache(lookup)
    pending = asyncio.create_task(cache.get("a"))
    await asyncio.sleep(0.01)
    lookup.rows["a"] = grant("a", KeyStatus.REVOKED)  # the revoke commits...
    cache.invalidate("a")  # ...and its message arrives while the old read is in flight
    lookup.gate.set()
    stale = await pending
    assert stale is not None
    assert stale.key.status is KeyStatus.ACTIVE
    fresh = await cache.get("a")  # not served from cache: reloaded
    assert fresh is not None
    assert fresh.key.status is KeyStatus.REVOKED


async def test_project_invalidation_and_clear() -> None:
    lookup = SlowLookup()
    lookup.rows.update(a=grant("a", project="p1"), b=grant("b", project="p2"))
    cache = KeyCache(lookup)
    await cache.get("a")
    await cache.get("b")
    cache.invalidate_project("p1")
    assert len(cache) == 1
    cache.clear()
    assert len(cache) == 0


async def test_organization_invalidation_drops_every_key_of_the_organization() -> None:
    lookup = SlowLookup()
    lookup.rows.update(a=grant("a", project="p1"), b=grant("b", project="p2"))
    other = grant("c")
    lookup.rows["c"] = grant_for(dataclasses.replace(other.key, organization_id="o2"))
    cache = KeyCache(lookup)
    for key_id in "abc":
        await cache.get(key_id)
    loads = lookup.loads
    cache.invalidate_organization("o")
    assert len(cache) == 1
    await cache.get("c")
    assert lookup.loads == loads  # the other organisation's key is still cached
    await cache.get("a")
    assert lookup.loads == loads + 1


async def test_bounded_size_evicts_least_recently_used() -> None:
    lookup = SlowLookup()
    for name in "abc":
        lookup.rows[name] = grant(name)
    cache = KeyCache(lookup, max_entries=2)
    await cache.get("a")
    await cache.get("b")
    await cache.get("a")
    await cache.get("c")  # evicts b
    loads = lookup.loads
    await cache.get("a")
    assert lookup.loads == loads
    await cache.get("b")
    assert lookup.loads == loads + 1


async def test_failed_load_propagates_and_is_not_cached() -> None:
    class Broken:
        calls = 0

        async def load_key(self, key_id: str) -> KeyGrant | None:
            Broken.calls += 1
            raise ConnectionError("database down")

    cache = KeyCache(Broken())
    for _ in range(2):
        with pytest.raises(ConnectionError):
            await cache.get("a")
    assert Broken.calls == 2


async def test_peek_answers_fresh_entries_without_awaiting_and_misses_otherwise() -> None:
    lookup, clock = SlowLookup(), Clock()
    cache = KeyCache(lookup, ttl_s=10, clock=clock)
    lookup.rows["a"] = grant("a")
    assert isinstance(cache.peek("a"), Miss)
    loaded = await cache.get("a")
    assert cache.peek("a") is loaded
    clock.now += 11
    assert isinstance(cache.peek("a"), Miss)
