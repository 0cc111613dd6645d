"""Tenant isolation: another organisation's objects are simply not found, and the
schema refuses cross-tenant references even from writes that bypass the store."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Table, insert
from sqlalchemy.exc import IntegrityError

from lockgate.store import NotFound, Store
from lockgate.store.database import create_engine
from lockgate.store.schema import api_keys, role_bindings
from lockgate.tenancy.model import PrincipalKind, Role


async def test_tenant_isolation(store: Store) -> None:
    """Every read, update and delete through organisation B of A's objects: not found."""
    a = await store.organizations.create(name="a")
    b = await store.organizations.create(name="b")
    project = await store.projects.create(organization_id=a.id, name="web")
    user = await store.users.create(organization_id=a.id, email="u@a", name="U")
    bot = await store.service_accounts.create(organization_id=a.id, name="ci")
    binding = await store.role_bindings.create(
        subject_kind=PrincipalKind.USER,
        subject_id=user.id,
        role=Role.MEMBER,
        organization_id=a.id,
    )
    key = await store.api_keys.create(
        key_id="lg_a", organization_id=a.id, project_id=project.id, name="k", secret_hash=b"h"
    )
    await store.upstream_secrets.put(
        organization_id=a.id, name="openai", ciphertext=b"c", key_version=1
    )

    attempts = [
        store.projects.get(project.id, organization_id=b.id),
        store.projects.update(project.id, name="x", organization_id=b.id),
        store.projects.delete(project.id, organization_id=b.id),
        store.users.get(user.id, organization_id=b.id),
        store.users.update(user.id, name="x", organization_id=b.id),
        store.users.delete(user.id, organization_id=b.id),
        store.service_accounts.get(bot.id, organization_id=b.id),
        store.service_accounts.update(bot.id, name="x", organization_id=b.id),
        store.service_accounts.delete(bot.id, organization_id=b.id),
        store.role_bindings.get(binding.id, organization_id=b.id),
        store.role_bindings.delete(binding.id, organization_id=b.id),
        store.api_keys.get(key.id, organization_id=b.id),
        store.api_keys.update(key.id, name="x", organization_id=b.id),
        store.api_keys.set_status(key.id, key.status, organization_id=b.id),
        store.api_keys.rotate(
            key.id,
            new_secret_hash=b"n",
            previous_expires_at=datetime.now(UTC),
            organization_id=b.id,
        ),
        store.api_keys.delete(key.id, organization_id=b.id),
        store.upstream_secrets.get("openai", organization_id=b.id),
        store.upstream_secrets.delete("openai", organization_id=b.id),
    ]
    for attempt in attempts:
        with pytest.raises(NotFound):
            await attempt

    # Lists through B see nothing of A; A's objects are untouched.
    assert await store.projects.list(organization_id=b.id) == []
    assert await store.users.list(organization_id=b.id) == []
    assert await store.service_accounts.list(organization_id=b.id) == []
    assert await store.role_bindings.list(organization_id=b.id) == []
    assert (
        await store.role_bindings.list_for_subject(
            PrincipalKind.USER, user.id, organization_id=b.id
        )
        == []
    )
    assert await store.api_keys.list(organization_id=b.id) == []
    assert await store.upstream_secrets.list_names(organization_id=b.id) == []
    assert await store.projects.get(project.id, organization_id=a.id) == project
    assert await store.api_keys.get(key.id, organization_id=a.id) == key

    # Cross-tenant references are refused by the schema, not just by the queries.
    with pytest.raises(NotFound):
        await store.api_keys.create(
            key_id="lg_b",
            organization_id=b.id,
            project_id=project.id,
            name="k",
            secret_hash=b"h",
        )
    with pytest.raises(NotFound):
        await store.role_bindings.create(
            subject_kind=PrincipalKind.USER,
            subject_id=user.id,
            role=Role.MEMBER,
            organization_id=b.id,
        )
    with pytest.raises(NotFound):
        await store.role_bindings.create(
            subject_kind=PrincipalKind.USER,
            subject_id=user.id,
            role=Role.MEMBER,
            organization_id=a.id,
            project_id="proj_elsewhere",
        )


async def _insert_raw(url: str, table: Table, values: dict[str, Any]) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(insert(table).values(values))
    finally:
        await engine.dispose()


async def test_schema_backs_up_the_repositories(store: Store, migrated_url: str) -> None:
    """Writes that bypass the repositories still cannot break the tenancy rules."""
    a = await store.organizations.create(name="a")
    b = await store.organizations.create(name="b")
    project = await store.projects.create(organization_id=a.id, name="web")
    now = datetime.now(UTC)
    binding = {
        "id": "rb_x",
        "subject_kind": "user",
        "subject_id": "user_x",
        "created_at": now,
        "project_id": None,
    }
    key = {
        "id": "lg_x",
        "organization_id": a.id,
        "project_id": project.id,
        "name": "k",
        "secret_hash": b"h",
        "status": "active",
        "scopes": [],
        "allowed_models": [],
        "allowed_cidrs": [],
        "metadata": {},
        "created_at": now,
    }
    refused: list[tuple[Table, dict[str, Any]]] = [
        (role_bindings, {**binding, "role": "superadmin", "organization_id": a.id}),
        (role_bindings, {**binding, "role": "member", "organization_id": None}),
        (role_bindings, {**binding, "role": "emperor", "organization_id": a.id}),
        (
            role_bindings,
            {**binding, "subject_kind": "api_key", "role": "member", "organization_id": a.id},
        ),
        (api_keys, {**key, "status": "maybe"}),
        (api_keys, {**key, "organization_id": b.id}),  # project of another tenant
    ]
    for table, values in refused:
        with pytest.raises(IntegrityError):
            await _insert_raw(migrated_url, table, values)
    await _insert_raw(migrated_url, api_keys, key)  # the control: valid as given
