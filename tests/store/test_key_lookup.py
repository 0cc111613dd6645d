"""The data plane's loader: a key with its project's model list, in one query."""

from __future__ import annotations

from lockgate.store import Store
from lockgate.store.key_lookup import StoreKeyLookup
from lockgate.tenancy.key_cache import KeyGrant, KeyLookup
from lockgate.tenancy.model import KeyStatus


async def test_load_key_with_project_models(store: Store) -> None:
    org = await store.organizations.create(name="acme")
    project = await store.projects.create(
        organization_id=org.id, name="web", allowed_models=["m1", "m2"]
    )
    key = await store.api_keys.create(
        key_id="lg_k", organization_id=org.id, project_id=project.id, name="k", secret_hash=b"h"
    )
    lookup: KeyLookup = StoreKeyLookup(store)
    assert await lookup.load_key("lg_k") == KeyGrant(key=key, project_allowed_models=("m1", "m2"))
    assert await lookup.load_key("lg_missing") is None

    # Disabled keys still load: judging status is the authenticator's job.
    disabled = await store.api_keys.set_status("lg_k", KeyStatus.DISABLED, organization_id=org.id)
    grant = await lookup.load_key("lg_k")
    assert grant is not None
    assert grant.key == disabled
