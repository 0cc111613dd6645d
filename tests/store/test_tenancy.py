"""Organisations, projects, users, service accounts, role bindings: round trips,
tenant isolation, conflicts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from lockgate.store import UNSET, Conflict, ConflictReason, Invalid, NotFound, Store
from lockgate.tenancy.model import PrincipalKind, Role


async def test_organization_round_trip(store: Store) -> None:
    before = datetime.now(UTC)
    org = await store.organizations.create(name="acme", metadata={"tier": "gold", "n": [1, 2]})
    assert org.id.startswith("org_")
    assert before <= org.created_at <= datetime.now(UTC)
    assert org.created_at.tzinfo is UTC
    assert await store.organizations.get(org.id) == org  # exact, to the microsecond

    renamed = await store.organizations.update(org.id, name="acme-corp")
    assert renamed == org.__class__(org.id, "acme-corp", org.created_at, org.metadata)
    assert await store.organizations.update(org.id) == renamed  # nothing to change
    assert await store.organizations.update(org.id, name=UNSET, metadata={}) != renamed

    other = await store.organizations.create(name="globex")
    assert [o.id for o in await store.organizations.list()] == [org.id, other.id]
    assert [o.id for o in await store.organizations.list(after=org.id)] == [other.id]
    assert [o.id for o in await store.organizations.list(limit=1)] == [org.id]

    await store.organizations.delete(other.id)
    with pytest.raises(NotFound):
        await store.organizations.get(other.id)
    with pytest.raises(NotFound):
        await store.organizations.delete(other.id)
    with pytest.raises(NotFound):
        await store.organizations.update(other.id, name="x")


async def test_organization_conflicts(store: Store) -> None:
    org = await store.organizations.create(name="acme")
    with pytest.raises(Conflict, match="an organization named 'acme' already exists") as duplicate:
        await store.organizations.create(name="acme")
    assert duplicate.value.reason is ConflictReason.DUPLICATE
    await store.projects.create(organization_id=org.id, name="web")
    with pytest.raises(Conflict) as in_use:
        await store.organizations.delete(org.id)
    assert in_use.value.reason is ConflictReason.REFERENCE
    with pytest.raises(Invalid):
        await store.organizations.list(limit=0)
    with pytest.raises(Invalid):
        await store.organizations.create(name="x", metadata={"when": object()})


async def test_project_round_trip(store: Store) -> None:
    org = await store.organizations.create(name="acme")
    project = await store.projects.create(
        organization_id=org.id, name="web", allowed_models=["gpt-x", "llama"], metadata={"a": 1}
    )
    assert project.id.startswith("proj_")
    assert project.allowed_models == ("gpt-x", "llama")
    assert await store.projects.get(project.id, organization_id=org.id) == project
    assert await store.projects.get(project.id, organization_id=None) == project  # superadmin

    updated = await store.projects.update(
        project.id, organization_id=org.id, allowed_models=(), name="web2"
    )
    assert (updated.name, updated.allowed_models, updated.created_at) == (
        "web2",
        (),
        project.created_at,
    )
    second = await store.projects.create(organization_id=org.id, name="batch")
    assert await store.projects.list(organization_id=org.id) == [updated, second]
    await store.projects.delete(second.id, organization_id=org.id)
    assert await store.projects.list(organization_id=org.id) == [updated]


async def test_project_conflicts(store: Store) -> None:
    org = await store.organizations.create(name="acme")
    await store.projects.create(organization_id=org.id, name="web")
    with pytest.raises(Conflict):
        await store.projects.create(organization_id=org.id, name="web")
    other = await store.organizations.create(name="globex")
    await store.projects.create(organization_id=other.id, name="web")  # names are per org
    with pytest.raises(NotFound, match="organization"):
        await store.projects.create(organization_id="org_missing", name="web")


async def test_users_and_service_accounts(store: Store) -> None:
    org = await store.organizations.create(name="acme")
    alice = await store.users.create(organization_id=org.id, email=" Alice@Example.com", name="A")
    assert (alice.id[:5], alice.email, alice.is_disabled) == ("user_", "alice@example.com", False)
    assert await store.users.get(alice.id, organization_id=org.id) == alice
    with pytest.raises(Conflict):
        await store.users.create(organization_id=org.id, email="ALICE@example.com", name="B")
    other = await store.organizations.create(name="globex")
    await store.users.create(organization_id=other.id, email="alice@example.com", name="A2")

    root = await store.users.create(organization_id=None, email="root@example.com", name="R")
    with pytest.raises(Conflict):  # unique among deployment users too, despite NULL org
        await store.users.create(organization_id=None, email="root@example.com", name="R2")

    disabled = await store.users.update(alice.id, organization_id=org.id, is_disabled=True)
    assert disabled.is_disabled
    assert await store.users.list(organization_id=org.id) == [disabled]
    assert {u.id for u in await store.users.list(organization_id=None)} >= {alice.id, root.id}

    bot = await store.service_accounts.create(organization_id=org.id, name="ci")
    assert bot.id.startswith("sa_")
    assert await store.service_accounts.get(bot.id, organization_id=org.id) == bot
    with pytest.raises(Conflict):
        await store.service_accounts.create(organization_id=org.id, name="ci")
    renamed = await store.service_accounts.update(bot.id, organization_id=org.id, name="cd")
    assert await store.service_accounts.list(organization_id=org.id) == [renamed]
    await store.users.delete(alice.id, organization_id=org.id)
    await store.service_accounts.delete(bot.id, organization_id=org.id)
    assert await store.users.list(organization_id=org.id) == []
    assert await store.service_accounts.list(organization_id=org.id) == []


async def test_role_bindings(store: Store) -> None:
    org = await store.organizations.create(name="acme")
    project = await store.projects.create(organization_id=org.id, name="web")
    alice = await store.users.create(organization_id=org.id, email="a@x", name="A")
    root = await store.users.create(organization_id=None, email="root@x", name="R")
    bot = await store.service_accounts.create(organization_id=org.id, name="ci")

    admin = await store.role_bindings.create(
        subject_kind=PrincipalKind.USER,
        subject_id=alice.id,
        role=Role.ORG_ADMIN,
        organization_id=org.id,
    )
    scoped = await store.role_bindings.create(
        subject_kind=PrincipalKind.USER,
        subject_id=alice.id,
        role=Role.PROJECT_ADMIN,
        organization_id=org.id,
        project_id=project.id,
    )
    sudo = await store.role_bindings.create(
        subject_kind=PrincipalKind.USER,
        subject_id=root.id,
        role=Role.SUPERADMIN,
        organization_id=None,
    )
    member = await store.role_bindings.create(
        subject_kind=PrincipalKind.SERVICE_ACCOUNT,
        subject_id=bot.id,
        role=Role.MEMBER,
        organization_id=org.id,
        project_id=project.id,
    )
    assert admin.id.startswith("rb_")
    assert await store.role_bindings.get(admin.id, organization_id=org.id) == admin
    assert await store.role_bindings.list_for_subject(
        PrincipalKind.USER, alice.id, organization_id=None
    ) == [admin, scoped]
    assert await store.role_bindings.list_for_subject(
        PrincipalKind.USER, root.id, organization_id=None
    ) == [sudo]
    assert await store.role_bindings.list(organization_id=org.id) == [admin, scoped, member]
    assert await store.role_bindings.list(organization_id=org.id, project_id=project.id) == [
        scoped,
        member,
    ]

    with pytest.raises(Conflict):  # the same grant twice, NULL project and all
        await store.role_bindings.create(
            subject_kind=PrincipalKind.USER,
            subject_id=alice.id,
            role=Role.ORG_ADMIN,
            organization_id=org.id,
        )
    with pytest.raises(Conflict):
        await store.role_bindings.create(
            subject_kind=PrincipalKind.USER,
            subject_id=root.id,
            role=Role.SUPERADMIN,
            organization_id=None,
        )
    with pytest.raises(Invalid, match="deployment-wide"):
        await store.role_bindings.create(
            subject_kind=PrincipalKind.USER,
            subject_id=alice.id,
            role=Role.SUPERADMIN,
            organization_id=org.id,
        )
    with pytest.raises(Invalid, match="give organization_id"):
        await store.role_bindings.create(
            subject_kind=PrincipalKind.USER,
            subject_id=root.id,
            role=Role.VIEWER,
            organization_id=None,
        )
    with pytest.raises(Invalid, match="cannot hold roles"):
        await store.role_bindings.create(
            subject_kind=PrincipalKind.API_KEY,
            subject_id="k",
            role=Role.MEMBER,
            organization_id=org.id,
        )

    # Deleting the project removes the bindings scoped to it; deleting a user, theirs.
    await store.role_bindings.delete(member.id, organization_id=org.id)
    await store.projects.delete(project.id, organization_id=org.id)
    assert await store.role_bindings.list(organization_id=org.id) == [admin]
    await store.users.delete(alice.id, organization_id=org.id)
    assert await store.role_bindings.list(organization_id=org.id) == []
    with pytest.raises(NotFound):
        await store.role_bindings.delete(admin.id, organization_id=org.id)


async def test_timestamps_are_exact_and_utc(store: Store) -> None:
    org = await store.organizations.create(name="acme")
    project = await store.projects.create(organization_id=org.id, name="web")
    instant = datetime(2031, 2, 3, 4, 5, 6, 789012, tzinfo=UTC)
    plus_two = instant.astimezone(timezone(timedelta(hours=2)))
    key = await store.api_keys.create(
        key_id="lg_t",
        organization_id=org.id,
        project_id=project.id,
        name="k",
        secret_hash=b"h",
        expires_at=plus_two,
    )
    stored = await store.api_keys.get(key.id, organization_id=org.id)
    assert stored.expires_at == instant
    assert stored.expires_at is not None
    assert stored.expires_at.tzinfo is UTC
    assert stored == key
    with pytest.raises(Invalid, match="timezone-aware"):
        await store.api_keys.update(key.id, organization_id=org.id, expires_at=datetime(2031, 1, 1))
