"""Upstream secrets: ciphertext by name, per organisation or deployment-wide."""

from __future__ import annotations

import asyncio

import pytest

from lockgate.store import Conflict, NotFound, Store


async def test_put_get_replace_list_delete(store: Store) -> None:
    org = await store.organizations.create(name="acme")
    first = await store.upstream_secrets.put(
        organization_id=org.id, name="openai", ciphertext=b"\x01v1", key_version=1
    )
    assert first.id.startswith("sec_")
    assert first.created_at == first.updated_at
    assert await store.upstream_secrets.get("openai", organization_id=org.id) == first

    replaced = await store.upstream_secrets.put(
        organization_id=org.id, name="openai", ciphertext=b"\x02v2", key_version=2
    )
    assert (replaced.id, replaced.created_at) == (first.id, first.created_at)
    assert (replaced.ciphertext, replaced.key_version) == (b"\x02v2", 2)
    assert replaced.updated_at >= first.updated_at

    shared = await store.upstream_secrets.put(
        organization_id=None, name="openai", ciphertext=b"deployment", key_version=1
    )
    await store.upstream_secrets.put(
        organization_id=None, name="anthropic", ciphertext=b"d2", key_version=1
    )
    assert shared.id != first.id  # same name, different owner
    assert await store.upstream_secrets.get("openai", organization_id=None) == shared
    assert await store.upstream_secrets.list_names(organization_id=None) == ["anthropic", "openai"]
    assert await store.upstream_secrets.list_names(organization_id=org.id) == ["openai"]

    with pytest.raises(Conflict):  # secrets keep their organisation alive
        await store.organizations.delete(org.id)
    await store.upstream_secrets.delete("openai", organization_id=org.id)
    with pytest.raises(NotFound):
        await store.upstream_secrets.get("openai", organization_id=org.id)
    assert await store.upstream_secrets.get("openai", organization_id=None) == shared
    with pytest.raises(NotFound, match="organization"):
        await store.upstream_secrets.put(
            organization_id="org_missing", name="x", ciphertext=b"c", key_version=1
        )


async def test_concurrent_first_puts_do_not_conflict(store: Store) -> None:
    puts = [
        store.upstream_secrets.put(
            organization_id=None, name="race", ciphertext=bytes([i]), key_version=i
        )
        for i in range(8)
    ]
    results = await asyncio.gather(*puts)
    assert len({secret.id for secret in results}) == 1
    stored = await store.upstream_secrets.get("race", organization_id=None)
    assert stored.key_version in range(8)
