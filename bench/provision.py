"""Give the ``lockgate-auth`` target a tenant and an API key, as an operator would."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

from lockgate.config import load_config, resolve
from lockgate.controlplane.actions import SYSTEM, AdminActions
from lockgate.invalidation.inprocess import InProcessBus
from lockgate.serve import prepare
from lockgate.startup import database_url, resolve_pepper
from lockgate.store import Store


def provision_key(config_path: Path) -> str:
    """Migrate the gateway's database and create one inference key; returns the key."""
    config = resolve(load_config(config_path))
    prepare(config)

    async def create() -> str:
        store = await Store.open(database_url(config))
        try:
            actions = AdminActions(store, InProcessBus(), resolve_pepper(config))
            # A new tenant per start: the harness restarts the target for each scenario.
            org = await actions.create_organization(SYSTEM, f"bench-{secrets.token_hex(4)}")
            project = await actions.create_project(SYSTEM, org.id, "bench")
            _, key = await actions.create_api_key(
                SYSTEM, organization_id=org.id, project_id=project.id, name="bench"
            )
            return key
        finally:
            await store.close()

    return asyncio.run(create())
