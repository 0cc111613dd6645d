"""Fixtures: a migrated store on SQLite (a file under tmp_path) and on the real PostgreSQL
(one database for the session, its webhook tables emptied before each test), a master
keyring, and webhook actions on an in-process bus."""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from lockgate.controlplane.actions import AdminActions
from lockgate.invalidation.inprocess import InProcessBus
from lockgate.store import Store
from lockgate.store.schema import usage_records
from lockgate.store.schema_billing import (
    background_leases,
    webhook_attempts,
    webhook_deliveries,
    webhook_events,
    webhook_subscriptions,
)
from lockgate.tenancy.secretbox import Keyring
from tests.databases import session_database, store_url_on

_EMPTIED = (
    webhook_attempts,
    webhook_deliveries,
    webhook_events,
    webhook_subscriptions,
    background_leases,
    usage_records,
)


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def webhooks_postgres_url() -> Iterator[str]:
    with session_database() as url:
        yield url


@pytest.fixture
async def store_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    return await store_url_on(
        backend, tmp_path, lambda: str(request.getfixturevalue("webhooks_postgres_url")), _EMPTIED
    )


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    opened = await Store.open(store_url)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def keyring() -> Keyring:
    return Keyring.parse("1:" + base64.b64encode(os.urandom(32)).decode())


@pytest.fixture
def actions(store: Store, keyring: Keyring) -> AdminActions:
    return AdminActions(store, InProcessBus(), b"pepper-for-tests-0123456789abcdef", keyring)
