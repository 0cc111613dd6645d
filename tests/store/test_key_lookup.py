"""The data plane's loader: a key with its project and organisation, in one query."""

from __future__ import annotations

from lockgate.admission.spec import LimitSpec
from lockgate.store import Store
from lockgate.store.key_lookup import StoreKeyLookup
from lockgate.tenancy.key_cache import KeyGrant, KeyLookup
from lockgate.tenancy.model import KeyStatus


async def test_load_key_with_project_and_organization(store: Store) -> None:
    org = await store.organizations.create(
        name="acme", allowed_models=["m1", "m2", "m3"], limits=LimitSpec(requests_per_minute=600)
    )
    project = await store.projects.create(
        organization_id=org.id,
        name="web",
        allowed_models=["m1", "m2"],
        limits=LimitSpec(tokens_per_minute=1000),
        model_limits={"m1": LimitSpec(concurrent_requests=2)},
    )
    key = await store.api_keys.create(
        key_id="lg_k",
        organization_id=org.id,
        project_id=project.id,
        name="k",
        secret_hash=b"h",
        limits=LimitSpec(requests_per_second=1),
    )
    lookup: KeyLookup = StoreKeyLookup(store)
    grant = await lookup.load_key("lg_k")
    assert grant == KeyGrant(key=key, project=project, organization=org)
    assert grant.project.model_limits["m1"].concurrent_requests == 2
    assert grant.organization.limits.requests_per_minute == 600
    assert grant.key.limits.requests_per_second == 1
    assert grant.service_account_disabled is False
    assert await lookup.load_key("lg_missing") is None

    # Disabled keys still load: judging status is the authenticator's job.
    disabled = await store.api_keys.set_status("lg_k", KeyStatus.DISABLED, organization_id=org.id)
    grant = await lookup.load_key("lg_k")
    assert grant is not None
    assert grant.key == disabled


async def test_load_key_reports_its_service_account_disabled(store: Store) -> None:
    org = await store.organizations.create(name="acme")
    project = await store.projects.create(organization_id=org.id, name="web")
    account = await store.service_accounts.create(organization_id=org.id, name="ci")
    await store.api_keys.create(
        key_id="lg_sa",
        organization_id=org.id,
        project_id=project.id,
        name="k",
        secret_hash=b"h",
        service_account_id=account.id,
    )
    lookup = StoreKeyLookup(store)
    grant = await lookup.load_key("lg_sa")
    assert grant is not None
    assert grant.service_account_disabled is False
    await store.service_accounts.update(account.id, organization_id=org.id, is_disabled=True)
    grant = await lookup.load_key("lg_sa")
    assert grant is not None
    assert grant.service_account_disabled is True
