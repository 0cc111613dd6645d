"""Limits and model ceilings on tenancy records (0003), and taking tenants apart:
round trips on both backends, tenant filtering, and existing rows after the migration."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import text

from lockgate.admission.spec import NO_LIMITS, LimitSpec
from lockgate.store import Conflict, NotFound, Store, upgrade
from lockgate.store.database import create_engine
from lockgate.tenancy.model import KeyStatus, PrincipalKind, Role


async def test_limits_round_trip_on_every_record(store: Store) -> None:
    org = await store.organizations.create(
        name="acme", allowed_models=["m1", "m2"], limits=LimitSpec(spend_per_month=Decimal("99.5"))
    )
    assert await store.organizations.get(org.id) == org
    assert org.limits.spend_per_month == Decimal("99.5")
    project = await store.projects.create(
        organization_id=org.id,
        name="web",
        limits=LimitSpec(requests_per_minute=60, burst=10),
        model_limits={"m1": LimitSpec(tokens_per_day=10**6)},
    )
    assert await store.projects.get(project.id, organization_id=org.id) == project
    key = await store.api_keys.create(
        key_id="lg_a", organization_id=org.id, project_id=project.id, name="k", secret_hash=b"h"
    )
    assert key.limits == NO_LIMITS

    org2 = await store.organizations.update(org.id, allowed_models=[], limits=NO_LIMITS)
    assert (org2.allowed_models, org2.limits, org2.name) == ((), NO_LIMITS, "acme")
    project2 = await store.projects.update(
        project.id, organization_id=org.id, model_limits={}, limits=LimitSpec(tokens_per_minute=5)
    )
    assert project2.model_limits == {}
    assert project2.limits == LimitSpec(tokens_per_minute=5)
    assert await store.projects.get(project.id, organization_id=org.id) == project2
    key2 = await store.api_keys.update(
        "lg_a",
        organization_id=org.id,
        limits=LimitSpec(concurrent_requests=3),
        required_model_tags={"tier": "gold"},
    )
    assert key2.limits.concurrent_requests == 3
    assert key2.required_model_tags == {"tier": "gold"}
    assert await store.api_keys.get("lg_a", organization_id=org.id) == key2
    with pytest.raises(NotFound):
        await store.projects.update(project.id, organization_id="org_other", limits=NO_LIMITS)


async def test_service_account_keys_are_revoked_and_detached_within_the_tenant(
    store: Store,
) -> None:
    org = await store.organizations.create(name="acme")
    other = await store.organizations.create(name="globex")
    project = await store.projects.create(organization_id=org.id, name="web")
    account = await store.service_accounts.create(organization_id=org.id, name="ci")
    for key_id in ("lg_1", "lg_2"):
        await store.api_keys.create(
            key_id=key_id,
            organization_id=org.id,
            project_id=project.id,
            name=key_id,
            secret_hash=b"h",
            service_account_id=account.id,
        )
    assert await store.api_keys.ids_for_service_account(account.id, organization_id=other.id) == []
    assert (
        await store.api_keys.revoke_for_service_account(account.id, organization_id=other.id) == []
    )
    ids = await store.api_keys.ids_for_service_account(account.id, organization_id=org.id)
    assert ids == ["lg_1", "lg_2"]
    revoked = await store.api_keys.revoke_for_service_account(account.id, organization_id=org.id)
    assert revoked == ["lg_1", "lg_2"]
    key = await store.api_keys.get("lg_1", organization_id=org.id)
    assert (key.status, key.service_account_id) == (KeyStatus.REVOKED, None)
    await store.service_accounts.delete(account.id, organization_id=org.id)  # no longer referred


async def test_deleting_a_projects_keys_stays_in_the_tenant(store: Store) -> None:
    org = await store.organizations.create(name="acme")
    project = await store.projects.create(organization_id=org.id, name="web")
    await store.api_keys.create(
        key_id="lg_1", organization_id=org.id, project_id=project.id, name="k", secret_hash=b"h"
    )
    assert await store.api_keys.delete_for_project(project.id, organization_id="org_x") == []
    with pytest.raises(Conflict):
        await store.projects.delete(project.id, organization_id=org.id)
    assert await store.api_keys.delete_for_project(project.id, organization_id=org.id) == ["lg_1"]
    await store.projects.delete(project.id, organization_id=org.id)


async def test_delete_with_contents_takes_the_whole_tenant_and_nothing_else(store: Store) -> None:
    org = await store.organizations.create(name="acme")
    other = await store.organizations.create(name="globex")
    kept_project = await store.projects.create(organization_id=other.id, name="web")
    await store.api_keys.create(
        key_id="lg_kept", organization_id=other.id, project_id=kept_project.id, name="k",
        secret_hash=b"h",
    )  # fmt: skip
    project = await store.projects.create(organization_id=org.id, name="web")
    account = await store.service_accounts.create(organization_id=org.id, name="ops")
    user = await store.users.create(organization_id=org.id, email="a@acme.test", name="A")
    outsider = await store.users.create(organization_id=None, email="root@x.test", name="R")
    await store.api_keys.create(
        key_id="lg_gone", organization_id=org.id, project_id=project.id, name="k",
        secret_hash=b"h", service_account_id=account.id,
    )  # fmt: skip
    for kind, subject, role, org_id in (
        (PrincipalKind.SERVICE_ACCOUNT, account.id, Role.SUPERADMIN, None),
        (PrincipalKind.USER, user.id, Role.ORG_ADMIN, org.id),
        (PrincipalKind.USER, outsider.id, Role.AUDITOR, org.id),
        (PrincipalKind.USER, outsider.id, Role.AUDITOR, other.id),
    ):
        await store.role_bindings.create(
            subject_kind=kind, subject_id=subject, role=role, organization_id=org_id
        )
    await store.upstream_secrets.put(
        organization_id=org.id, name="openai", ciphertext=b"x", key_version=1
    )

    removed = await store.organizations.delete_with_contents(org.id)
    assert removed.api_key_ids == ("lg_gone",)
    assert removed.project_ids == (project.id,)
    assert (removed.users, removed.service_accounts, removed.upstream_secrets) == (1, 1, 1)
    assert removed.role_bindings == 3  # including the account's deployment-wide superadmin
    with pytest.raises(NotFound):
        await store.organizations.get(org.id)
    remaining = await store.role_bindings.list(organization_id=None)
    assert [(b.subject_id, b.organization_id) for b in remaining] == [(outsider.id, other.id)]
    assert (await store.api_keys.get("lg_kept", organization_id=other.id)).name == "k"
    assert (await store.users.get(outsider.id, organization_id=None)).name == "R"
    with pytest.raises(NotFound):
        await store.organizations.delete_with_contents(org.id)


async def test_existing_rows_read_as_unlimited_after_the_migration(database_url: str) -> None:
    await upgrade(database_url, revision="0002_key_model_tags")
    at: object = datetime(2024, 1, 1, tzinfo=UTC)
    if database_url.startswith("sqlite"):
        at = "2024-01-01T00:00:00.000000+00:00"  # as UtcDateTime stores it there
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO organizations (id, name, metadata, created_at) "
                    "VALUES ('org_old', 'old', '{}', :at)"
                ),
                {"at": at},
            )
            await conn.execute(
                text(
                    "INSERT INTO projects (id, organization_id, name, allowed_models, metadata, "
                    "created_at) VALUES ('proj_old', 'org_old', 'p', '[\"m1\"]', '{}', :at)"
                ),
                {"at": at},
            )
    finally:
        await engine.dispose()
    await upgrade(database_url)
    store = await Store.open(database_url)
    try:
        org = await store.organizations.get("org_old")
        assert (org.allowed_models, org.limits) == ((), NO_LIMITS)
        project = await store.projects.get("proj_old", organization_id="org_old")
        assert (project.allowed_models, project.limits, project.model_limits) == (
            ("m1",),
            NO_LIMITS,
            {},
        )
    finally:
        await store.close()
