"""API keys: the hot-path lookup, listing, status, rotation, updates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from lockgate.store import Conflict, ConflictReason, NotFound, Store
from lockgate.tenancy.model import ApiKeyRecord, KeyStatus, Scope


async def _project(store: Store, name: str = "acme") -> tuple[str, str]:
    org = await store.organizations.create(name=name)
    project = await store.projects.create(organization_id=org.id, name="web")
    return org.id, project.id


async def test_create_lookup_get(store: Store) -> None:
    org_id, project_id = await _project(store)
    bot = await store.service_accounts.create(organization_id=org_id, name="ci")
    expires = datetime(2030, 6, 1, 12, 0, 0, 1, tzinfo=UTC)
    key = await store.api_keys.create(
        key_id="lg_abc123",
        organization_id=org_id,
        project_id=project_id,
        name="prod",
        secret_hash=b"\x00\xffhash",
        scopes=[Scope.INFERENCE, Scope.ADMIN],
        allowed_models=["m1"],
        allowed_cidrs=["10.0.0.0/8", "::1/128"],
        expires_at=expires,
        service_account_id=bot.id,
        metadata={"team": "core"},
    )
    assert key == ApiKeyRecord(
        id="lg_abc123",
        organization_id=org_id,
        project_id=project_id,
        name="prod",
        secret_hash=b"\x00\xffhash",
        status=KeyStatus.ACTIVE,
        scopes=(Scope.INFERENCE, Scope.ADMIN),
        allowed_models=("m1",),
        created_at=key.created_at,
        expires_at=expires,
        service_account_id=bot.id,
        allowed_cidrs=("10.0.0.0/8", "::1/128"),
        metadata={"team": "core"},
    )
    assert await store.api_keys.lookup("lg_abc123") == key
    assert await store.api_keys.lookup("lg_nope") is None
    assert await store.api_keys.get(key.id, organization_id=org_id) == key
    assert await store.api_keys.get(key.id, organization_id=None) == key

    with pytest.raises(Conflict) as duplicate:  # key ids are global, not per tenant
        await store.api_keys.create(
            key_id="lg_abc123",
            organization_id=org_id,
            project_id=project_id,
            name="again",
            secret_hash=b"x",
        )
    assert duplicate.value.reason is ConflictReason.DUPLICATE
    with pytest.raises(NotFound):
        await store.api_keys.create(
            key_id="lg_new",
            organization_id=org_id,
            project_id="proj_missing",
            name="k",
            secret_hash=b"x",
        )
    other_org, _ = await _project(store, "globex")
    other_bot = await store.service_accounts.create(organization_id=other_org, name="ci")
    with pytest.raises(NotFound):  # a service account of another organisation
        await store.api_keys.create(
            key_id="lg_new",
            organization_id=org_id,
            project_id=project_id,
            name="k",
            secret_hash=b"x",
            service_account_id=other_bot.id,
        )


async def test_list_by_org_and_project(store: Store) -> None:
    org_id, web = await _project(store)
    batch = (await store.projects.create(organization_id=org_id, name="batch")).id
    ids = {"k1": web, "k2": batch, "k3": web, "k4": batch}
    for key_id, project_id in ids.items():
        await store.api_keys.create(
            key_id=key_id,
            organization_id=org_id,
            project_id=project_id,
            name=key_id,
            secret_hash=b"h",
        )
    listed = await store.api_keys.list(organization_id=org_id)
    assert [k.id for k in listed] == ["k1", "k2", "k3", "k4"]
    by_project = await store.api_keys.list(organization_id=org_id, project_id=web)
    assert [k.id for k in by_project] == ["k1", "k3"]
    first = await store.api_keys.list(organization_id=org_id, limit=2)
    rest = await store.api_keys.list(organization_id=org_id, after=first[-1].id)
    assert [k.id for k in (*first, *rest)] == ["k1", "k2", "k3", "k4"]
    with pytest.raises(Conflict, match="API keys"):  # keys keep their project alive
        await store.projects.delete(web, organization_id=org_id)


async def test_status_and_rotation(store: Store) -> None:
    org_id, project_id = await _project(store)
    key = await store.api_keys.create(
        key_id="lg_rot",
        organization_id=org_id,
        project_id=project_id,
        name="k",
        secret_hash=b"old",
    )
    assert key.updated_at is None
    disabled = await store.api_keys.set_status(key.id, KeyStatus.DISABLED, organization_id=org_id)
    assert disabled.status is KeyStatus.DISABLED
    assert disabled.updated_at is not None
    assert disabled.updated_at >= key.created_at

    grace = datetime.now(UTC) + timedelta(hours=24)
    rotated = await store.api_keys.rotate(
        key.id, organization_id=org_id, new_secret_hash=b"new", previous_expires_at=grace
    )
    assert (rotated.secret_hash, rotated.previous_secret_hash) == (b"new", b"old")
    assert rotated.previous_expires_at == grace
    assert rotated.status is KeyStatus.DISABLED  # rotation does not change status
    again = await store.api_keys.rotate(
        key.id, organization_id=org_id, new_secret_hash=b"newer", previous_expires_at=grace
    )
    assert (again.secret_hash, again.previous_secret_hash) == (b"newer", b"new")
    assert await store.api_keys.lookup(key.id) == again


async def test_update_fields(store: Store) -> None:
    org_id, project_id = await _project(store)
    key = await store.api_keys.create(
        key_id="lg_upd",
        organization_id=org_id,
        project_id=project_id,
        name="k",
        secret_hash=b"h",
        expires_at=datetime(2030, 1, 1, tzinfo=UTC),
    )
    updated = await store.api_keys.update(
        key.id,
        organization_id=org_id,
        name="renamed",
        scopes=[Scope.ADMIN],
        allowed_models=("a", "b"),
        allowed_cidrs=["192.168.0.0/16"],
        expires_at=None,
        metadata={"x": [1, 2]},
    )
    assert (updated.name, updated.scopes, updated.allowed_models) == (
        "renamed",
        (Scope.ADMIN,),
        ("a", "b"),
    )
    assert (updated.allowed_cidrs, updated.expires_at, updated.metadata) == (
        ("192.168.0.0/16",),
        None,
        {"x": [1, 2]},
    )
    assert (updated.secret_hash, updated.created_at) == (key.secret_hash, key.created_at)
    assert await store.api_keys.get(key.id, organization_id=org_id) == updated
    assert await store.api_keys.update(key.id, organization_id=org_id) == updated

    await store.api_keys.delete(key.id, organization_id=org_id)
    assert await store.api_keys.lookup(key.id) is None
