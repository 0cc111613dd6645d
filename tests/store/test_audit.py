"""The audit log: appends chain, concurrent appends never fork, tampering is found."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete, update

from lockgate.store import Invalid, Store
from lockgate.store.database import create_engine
from lockgate.store.schema import audit_log
from lockgate.tenancy.audit import GENESIS_HASH, verify_chain
from lockgate.tenancy.model import AuditEntry


async def _all(store: Store) -> list[AuditEntry]:
    return [entry async for entry in store.audit.iter_all(batch_size=7)]


async def _append(store: Store, n: int, organization_id: str | None = "org_a") -> AuditEntry:
    async with store.transaction() as tx:
        return await tx.audit.append(
            actor="user:u1",
            action="project.update",
            target_type="project",
            target_id=f"proj_{n}",
            organization_id=organization_id,
            before={"name": f"old{n}"},
            after={"name": f"new{n}"},
            source_ip="203.0.113.9",
            request_id=f"req-{n}",
        )


@pytest.fixture
async def raw_sql(migrated_url: str) -> AsyncIterator[Any]:
    """A connection that bypasses the store, as someone with database access would."""
    engine = create_engine(migrated_url)
    try:
        yield engine
    finally:
        await engine.dispose()


async def test_append_round_trip_and_chain(store: Store) -> None:
    assert await store.audit.head() is None
    first = await _append(store, 1)
    assert (first.seq, first.prev_hash) == (1, GENESIS_HASH)
    when = datetime(2030, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    second = await store.audit.append(  # outside a transaction: its own
        actor="system",
        action="key.rotate",
        target_type="api_key",
        target_id="lg_1",
        organization_id=None,
        before=None,
        after={"expires": when, "scopes": ("inference",), "n": 1.5, "nested": {"b": 1, "a": None}},
    )
    assert (second.seq, second.prev_hash) == (2, first.entry_hash)
    # Values are stored as JSON; the returned entry already shows them that way.
    assert second.after == {
        "expires": "2030-01-02T03:04:05.000006+00:00",
        "scopes": ["inference"],
        "n": 1.5,
        "nested": {"b": 1, "a": None},
    }
    entries = await _all(store)
    assert entries == [first, second]  # exact, `at` to the microsecond
    assert verify_chain(entries) is None
    assert await store.audit.head() == second
    with pytest.raises(Invalid):
        await store.audit.append(
            actor="system",
            action="x",
            target_type="t",
            target_id="i",
            organization_id=None,
            after={"bad": object()},
        )


async def test_fifty_concurrent_appends_never_fork(store: Store) -> None:
    await asyncio.gather(*(_append(store, n) for n in range(50)))
    entries = await _all(store)
    assert [e.seq for e in entries] == list(range(1, 51))
    assert sorted(e.target_id for e in entries) == sorted(f"proj_{n}" for n in range(50))
    assert verify_chain(entries) is None


async def test_tampering_with_a_field_is_found(store: Store, raw_sql: Any) -> None:
    for n in range(5):
        await _append(store, n)
    async with raw_sql.begin() as conn:
        await conn.execute(
            update(audit_log).where(audit_log.c.seq == 3).values(after={"name": "forged"})
        )
    broken = verify_chain(await _all(store))
    assert broken is not None
    assert broken.seq == 3


async def test_tampering_with_the_time_is_found(store: Store, raw_sql: Any) -> None:
    for n in range(3):
        await _append(store, n)
    entry = (await _all(store))[1]
    async with raw_sql.begin() as conn:
        await conn.execute(
            update(audit_log)
            .where(audit_log.c.seq == 2)
            .values(at=entry.at + timedelta(microseconds=1))
        )
    broken = verify_chain(await _all(store))
    assert broken is not None
    assert broken.seq == 2


async def test_deleting_an_entry_is_found(store: Store, raw_sql: Any) -> None:
    for n in range(5):
        await _append(store, n)
    async with raw_sql.begin() as conn:
        await conn.execute(delete(audit_log).where(audit_log.c.seq == 2))
    broken = verify_chain(await _all(store))
    assert broken is not None
    assert broken.seq == 3  # the entry after the gap


async def test_list_filters_and_cursor(store: Store) -> None:
    for n in range(12):
        await _append(store, n, organization_id="org_a" if n % 3 else "org_b")
    everything = await store.audit.list(organization_id=None, limit=1000)
    assert [e.seq for e in everything] == list(range(12, 0, -1))  # newest first

    seen: list[int] = []
    cursor: int | None = None
    while True:
        page = await store.audit.list(organization_id="org_a", limit=3, before_seq=cursor)
        if not page:
            break
        seen.extend(e.seq for e in page)
        cursor = page[-1].seq
    expected = [e.seq for e in everything if e.organization_id == "org_a"]
    assert seen == expected
    assert len(expected) == 8

    by_target = await store.audit.list(organization_id=None, target_id="proj_4")
    assert [e.target_id for e in by_target] == ["proj_4"]
    assert await store.audit.list(organization_id=None, action="nope") == []
    middle = everything[5].at
    newer = await store.audit.list(organization_id=None, since=middle, limit=1000)
    older = await store.audit.list(organization_id=None, until=middle, limit=1000)
    assert len(newer) + len(older) == 12
    assert all(e.at >= middle for e in newer)
    assert all(e.at < middle for e in older)
    with pytest.raises(Invalid):
        await store.audit.list(organization_id=None, limit=1001)
