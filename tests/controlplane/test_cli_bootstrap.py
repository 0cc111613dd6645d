"""``bootstrap_superadmin`` in-process (as the admin API would call it) and the operator
input parsers: the properties the CLI process tests cannot reach cheaply."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from lockgate.controlplane.actions import SYSTEM
from lockgate.controlplane.bootstrap import AlreadyBootstrapped, bootstrap_superadmin
from lockgate.controlplane.commands.audit import ChainWalk
from lockgate.controlplane.commands.errors import UsageError
from lockgate.controlplane.commands.inputs import parse_duration, parse_grace, parse_key_id
from lockgate.invalidation.inprocess import InProcessBus
from lockgate.store import Store, upgrade
from lockgate.tenancy.model import Role
from tests.databases import create_database, drop_database, postgres_admin_dsn

PEPPER = secrets.token_bytes(32)


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'lockgate.db'}"
        admin_dsn = None
    else:
        admin_dsn = postgres_admin_dsn()
        url = await create_database(admin_dsn)
    try:
        await upgrade(url)
        opened = await Store.open(url)
        try:
            yield opened
        finally:
            await opened.close()
    finally:
        if admin_dsn is not None:
            await drop_database(admin_dsn, make_url(url).database or "")


async def test_concurrent_bootstraps_leave_exactly_one_superadmin(store: Store) -> None:
    # Different organisation names, so no unique constraint serialises them: only
    # the superadmin check itself (re-read under the audit lock) can.
    results = await asyncio.gather(
        *(
            bootstrap_superadmin(store, InProcessBus(), PEPPER, SYSTEM, organization_name=name)
            for name in ("ops-a", "ops-b", "ops-c")
        ),
        return_exceptions=True,
    )
    refused = [r for r in results if isinstance(r, AlreadyBootstrapped)]
    assert len(refused) == 2, results
    [made] = [r for r in results if not isinstance(r, BaseException)]
    bindings = await store.role_bindings.list(organization_id=None)
    assert [(b.role, b.subject_id) for b in bindings] == [
        (Role.SUPERADMIN, made.service_account.id)
    ]
    assert [o.name for o in await store.organizations.list()] == [made.organization.name]
    walk = ChainWalk()
    async for entry in store.audit.iter_all():
        assert walk.check(entry) is None
    assert walk.count == 5  # organisation, project, service account, binding, key


async def test_forced_bootstrap_reuses_the_account_and_adds_a_key(store: Store) -> None:
    first = await bootstrap_superadmin(store, InProcessBus(), PEPPER, SYSTEM)
    with pytest.raises(AlreadyBootstrapped):
        await bootstrap_superadmin(store, InProcessBus(), PEPPER, SYSTEM)
    second = await bootstrap_superadmin(store, InProcessBus(), PEPPER, SYSTEM, force=True)
    assert second.service_account.id == first.service_account.id
    assert second.role_binding.id == first.role_binding.id
    assert second.api_key.id != first.api_key.id
    assert second.key != first.key
    actions = [e.action for e in await store.audit.list(organization_id=None)]
    assert actions[0] == "api_key.create"  # newest first: the forced run added only a key
    assert len(actions) == 6


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", timedelta(days=30)),
        ("12h", timedelta(hours=12)),
        ("1h30m", timedelta(minutes=90)),
        ("2w", timedelta(weeks=2)),
        (" 45S ", timedelta(seconds=45)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text, "--expires-in") == expected


@pytest.mark.parametrize("text", ["", "30", "d", "3x", "1.5h", "-1d", "0s", "30d junk"])
def test_bad_durations_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError, match="--expires-in"):
        parse_duration(text, "--expires-in")


def test_grace_may_be_zero_but_not_over_30_days() -> None:
    assert parse_grace("0s") == timedelta(0)
    with pytest.raises(UsageError, match="at most 30d"):
        parse_grace("31d")


def test_key_ids_are_accepted_as_listings_show_them() -> None:
    key_id = "abcdefghijklmnop"
    assert parse_key_id(key_id) == key_id
    assert parse_key_id(f"lg_{key_id}_…") == key_id
    for bad in ("abc", "ABCDEFGHIJKLMNOP", "lg_short_x", "abcdefghijklmno1"):
        with pytest.raises(UsageError):
            parse_key_id(bad)
