"""Price versions through the admin API: who may add them, what is refused, audit, and
every worker's catalogue seeing them; the live catalogue's rules on its own."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from lockgate.config import GatewaySpec, resolve
from lockgate.controlplane.admin.app import AdminServer
from lockgate.metering.live_prices import LivePriceCatalogue, PricesNotCurrent, merge
from lockgate.metering.pricing import PriceEntry
from lockgate.serve import prepare
from lockgate.services import Services
from lockgate.store.columns import utc_now
from lockgate.store.errors import StoreUnavailable
from lockgate.tenancy.model import Role
from tests.controlplane.conftest import Admin, database_url
from tests.controlplane.tenants import assert_error, two_tenants

__all__ = ["database_url"]  # the fixture, for pytest

CONFIG_PRICE = PriceEntry(
    id="llama-2026",
    model="llama",
    effective_from=datetime(2026, 1, 1, tzinfo=UTC),
    currency="EUR",
    input_per_million=Decimal("0.10"),
    output_per_million=Decimal("0.40"),
)


@pytest.fixture
async def admin(
    database_url: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Admin]:
    """The admin API of a deployment whose config prices llama in EUR."""
    monkeypatch.delenv("LOCKGATE_MASTER_KEYS", raising=False)
    pepper = tmp_path / "pepper"
    pepper.write_text("hex:" + secrets.token_hex(32))
    spec = GatewaySpec.model_validate(
        {
            "server": {"port": 0, "admin_port": 0, "data_dir": str(tmp_path / "data")},
            "database": {"url": database_url},
            "auth": {"api_key_pepper": {"file": str(pepper)}},
            "metering": {"prices": [CONFIG_PRICE.model_dump(mode="json")]},
        }
    )
    config = resolve(spec)
    await asyncio.to_thread(prepare, config)
    services = await Services.start(config)
    server = AdminServer(services.admin_app(), "127.0.0.1", 0)
    task = asyncio.create_task(server.serve())
    try:
        yield Admin(services, f"http://127.0.0.1:{server.port}")
    finally:
        server.stop()
        await task
        await services.close()


def _later(seconds: float) -> str:
    return (utc_now() + timedelta(seconds=seconds)).isoformat()


async def test_a_superadmin_adds_versions_that_every_catalogue_sees(admin: Admin) -> None:
    t = await two_tenants(admin)
    metering = admin.services.metering
    assert metering is not None
    starts = _later(120)
    body = {
        "model": "llama",
        "deployment": "vllm-h100",
        "effective_from": starts,
        "input_per_million": "0.20",
        "output_per_million": "0.80",
        "request_fee": "0.0001",
    }
    async with admin.client(t.superadmin) as client:
        added = await client.post("/admin/v1/prices", json=body)
        assert added.status_code == 201, added.text
        price = added.json()
        assert price["source"] == "admin"
        assert price["currency"] == "EUR"  # the catalogue's, from the config
        assert price["input_per_million"] == "0.20"
        assert price["created_by"].startswith("api_key:")
        # The worker's catalogue reloads on the bus message: the new version applies from
        # its start, on its deployment; before it, and elsewhere, the config's price does.
        at = datetime.fromisoformat(price["effective_from"]) + timedelta(seconds=1)
        for _ in range(100):
            found = metering.catalogue.price_at("llama", "vllm-h100", at)
            if found is not None and found.id == price["id"]:
                break
            await asyncio.sleep(0.02)
        else:
            pytest.fail("the catalogue never saw the new version")
        assert (
            metering.catalogue.price_at("llama", "vllm-h100", at - timedelta(hours=1))
            == CONFIG_PRICE
        )
        assert metering.catalogue.price_at("llama", "other", at) == CONFIG_PRICE
        listed = await client.get("/admin/v1/prices", params={"model": "llama"})
        assert [(p["id"], p["source"]) for p in listed.json()["data"]] == [
            ("llama-2026", "config"),
            (price["id"], "admin"),
        ]
        # Refusals: in the past (or too soon), another currency, the same start twice.
        assert_error(
            await client.post("/admin/v1/prices", json={**body, "effective_from": _later(5)}),
            422,
            "price_not_allowed",
        )
        assert_error(
            await client.post(
                "/admin/v1/prices", json={**body, "currency": "USD", "effective_from": _later(300)}
            ),
            422,
            "price_not_allowed",
        )
        assert_error(await client.post("/admin/v1/prices", json=body), 409, "conflict")
        assert_error(
            await client.post("/admin/v1/prices", json={**body, "input_per_million": "-1"}),
            400,
            "invalid_parameter",
        )
        assert_error(
            await client.post("/admin/v1/prices", json={**body, "colour": "red"}),
            400,
            "invalid_parameter",
        )
    entries = await admin.services.store.audit.list(organization_id=None, action="price.add")
    assert [(e.target_id, e.after["input_per_million"]) for e in entries] == [(price["id"], "0.20")]
    # An organisation's admin may read the price list but not change it.
    async with admin.client(t.a_admin) as client:
        assert (await client.get("/admin/v1/prices")).status_code == 200
        assert_error(
            await client.post("/admin/v1/prices", json={**body, "effective_from": _later(400)}),
            403,
            "permission_denied",
        )
    member = await admin.service_key(t.a, t.pa, Role.MEMBER, account_name="member")
    async with admin.client(member) as client:
        assert_error(await client.get("/admin/v1/prices"), 403, "permission_denied")


class _Source:
    def __init__(self, entries: Sequence[PriceEntry] = ()) -> None:
        self.entries = list(entries)
        self.fail = False

    async def all_entries(self) -> Sequence[PriceEntry]:
        if self.fail:
            raise StoreUnavailable("down")
        return list(self.entries)


def _price(price_id: str, start: datetime, **values: object) -> PriceEntry:
    return PriceEntry.model_validate(
        {"id": price_id, "model": "llama", "effective_from": start, "currency": "EUR", **values}
    )


async def test_the_catalogue_prices_only_what_its_last_load_can_vouch_for() -> None:
    now = [1_800_000_000.0]
    source = _Source()
    catalogue = LivePriceCatalogue(
        [CONFIG_PRICE], source, lead_s=60, refresh_s=3600, clock=lambda: now[0]
    )
    await catalogue.start()
    try:
        loaded = now[0]
        us = int(loaded * 1_000_000)
        quote = catalogue.quote_us("llama", None, us, 1_000_000, 0, 0, True)
        assert quote.price_id == "llama-2026"
        # 45 s past the load is beyond what it vouches for (60 s lead less the skew margin).
        with pytest.raises(PricesNotCurrent):
            catalogue.quote_us("llama", None, us + 45_000_000, 1, 0, 0, True)
        # The refusal asked for a reload; once done, the same record is priced.
        now[0] += 45
        for _ in range(100):
            if catalogue._valid_until_us > us + 45_000_000:
                break
            await asyncio.sleep(0.01)
        assert (
            catalogue.quote_us("llama", None, us + 45_000_000, 1, 0, 0, True).price_id
            == "llama-2026"
        )
    finally:
        await catalogue.close()


def test_config_versions_win_collisions_and_fix_the_currency() -> None:
    start = datetime(2027, 1, 1, tzinfo=UTC)
    merged = merge(
        [CONFIG_PRICE],
        [
            _price("llama-2026", start, input_per_million="9"),  # the config's id
            _price("same-start", CONFIG_PRICE.effective_from, input_per_million="9"),
            _price("dollars", start, currency="USD"),
            _price("next", start, input_per_million="0.05"),
        ],
    )
    assert merged.currency == "EUR"
    assert merged.price_at("llama", None, start) == _price("next", start, input_per_million="0.05")
    assert merged.price_at("llama", None, start - timedelta(days=1)) == CONFIG_PRICE
