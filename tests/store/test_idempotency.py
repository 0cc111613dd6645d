"""Idempotency records: one live record per (principal, key), claimed and completed in
the action's transaction; expired ones are replaced and purged."""

from __future__ import annotations

from datetime import timedelta

import pytest

from lockgate.store import Conflict, Store, StoreError
from lockgate.store.columns import utc_now


async def claim(store: Store, key: str, *, principal: str = "api_key:a", ttl_s: float = 60) -> None:
    async with store.transaction() as tx:
        await tx.idempotency.claim(
            principal=principal,
            idempotency_key=key,
            request_hash="h1",
            organization_id="org_a",
            expires_at=utc_now() + timedelta(seconds=ttl_s),
        )
        await tx.idempotency.complete(principal, key, b"sealed")


async def test_claim_complete_get(store: Store) -> None:
    assert await store.idempotency.get("api_key:a", "k1") is None
    await claim(store, "k1")
    record = await store.idempotency.get("api_key:a", "k1")
    assert record is not None
    assert (record.request_hash, record.response, record.organization_id) == (
        "h1",
        b"sealed",
        "org_a",
    )
    with pytest.raises(Conflict):
        await claim(store, "k1")
    await claim(store, "k1", principal="jwt:issuer#bob")  # keys are per principal


async def test_an_expired_record_is_replaced_then_purged(store: Store) -> None:
    await claim(store, "old", ttl_s=-1)
    await claim(store, "old")  # the expired record does not block the key
    await claim(store, "stale", ttl_s=-1)
    assert await store.idempotency.purge_expired() == 1
    assert await store.idempotency.get("api_key:a", "stale") is None
    assert await store.idempotency.get("api_key:a", "old") is not None


async def test_complete_without_a_claim_is_a_bug(store: Store) -> None:
    with pytest.raises(StoreError, match="not claimed"):
        async with store.transaction() as tx:
            await tx.idempotency.complete("api_key:a", "never", None)


async def failed_action(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.idempotency.claim(
            principal="api_key:a",
            idempotency_key="k",
            request_hash="h",
            organization_id=None,
            expires_at=utc_now() + timedelta(hours=1),
        )
        raise RuntimeError("the action failed")


async def test_a_failed_action_leaves_no_record(store: Store) -> None:
    with pytest.raises(RuntimeError):
        await failed_action(store)
    assert await store.idempotency.get("api_key:a", "k") is None
