"""Transactions: an admin action and its audit entry commit together, or not at all."""

from __future__ import annotations

import pytest

from lockgate.store import (
    Conflict,
    NotFound,
    PoolSettings,
    Store,
    StoreError,
    StoreUnavailable,
    Transaction,
)
from lockgate.tenancy.audit import verify_chain


class Boom(Exception):
    pass


async def _audited_create(tx: Transaction, name: str) -> str:
    org = await tx.organizations.create(name=name)
    await tx.audit.append(
        actor="user:root",
        action="organization.create",
        target_type="organization",
        target_id=org.id,
        organization_id=org.id,
        after={"name": name},
    )
    return org.id


async def test_action_and_audit_commit_together(store: Store) -> None:
    async with store.transaction() as tx:
        org_id = await _audited_create(tx, "acme")
        # Reads inside the transaction see its own writes.
        assert (await tx.organizations.get(org_id)).name == "acme"
    assert (await store.organizations.get(org_id)).name == "acme"
    head = await store.audit.head()
    assert head is not None
    assert (head.seq, head.target_id) == (1, org_id)


async def _create_then_fail(store: Store) -> None:
    async with store.transaction() as tx:
        org_id = await _audited_create(tx, "acme")
        raise Boom(org_id)


async def _project_then_duplicate(store: Store, organization_id: str) -> None:
    async with store.transaction() as tx:
        await tx.projects.create(organization_id=organization_id, name="p")
        await tx.organizations.create(name="taken")


async def _audit_then_write(store: Store) -> None:
    async with store.transaction() as tx:
        org_id = await _audited_create(tx, "acme")
        await tx.projects.create(organization_id=org_id, name="late")


async def test_failure_rolls_back_action_and_audit(store: Store) -> None:
    with pytest.raises(Boom) as failed:
        await _create_then_fail(store)
    with pytest.raises(NotFound):
        await store.organizations.get(failed.value.args[0])
    assert await store.audit.head() is None

    # A store error inside the block undoes the earlier writes too.
    taken = await store.organizations.create(name="taken")
    with pytest.raises(Conflict):
        await _project_then_duplicate(store, taken.id)
    assert await store.projects.list(organization_id=None) == []

    # The chain carries on from the last committed entry: no gap where the rollback was.
    async with store.transaction() as tx:
        await _audited_create(tx, "globex")
    entries = [entry async for entry in store.audit.iter_all()]
    assert [e.seq for e in entries] == [1]
    assert verify_chain(entries) is None


async def test_audit_entry_must_come_last(store: Store) -> None:
    with pytest.raises(StoreError, match="audit entry after"):
        await _audit_then_write(store)
    assert await store.organizations.list() == []

    async with store.transaction() as tx:  # more entries, and reads, are fine
        org_id = await _audited_create(tx, "acme")
        await tx.audit.append(
            actor="system",
            action="note",
            target_type="organization",
            target_id=org_id,
            organization_id=org_id,
        )
        await tx.organizations.get(org_id)
    head = await store.audit.head()
    assert head is not None
    assert head.seq == 2


async def test_transaction_cannot_be_used_after_it_ends(store: Store) -> None:
    async with store.transaction() as tx:
        pass
    with pytest.raises(StoreError, match="already finished"):
        await tx.organizations.list()


async def test_exhausted_pool_is_unavailable_not_a_hang(migrated_url: str) -> None:
    store = await Store.open(
        migrated_url, pool=PoolSettings(pool_size=1, max_overflow=0, pool_timeout_s=0.2)
    )
    try:
        async with store.transaction():
            with pytest.raises(StoreUnavailable, match="no database connection"):
                await store.organizations.list()
    finally:
        await store.close()
