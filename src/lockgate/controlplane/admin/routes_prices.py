"""Price versions: add one (superadmins), list them (anyone who may read usage).

Prices are deployment-wide (every tenant is charged from one catalogue), so
adding needs ``price.manage``, which only the superadmin holds. Versions are
never edited or deleted: a change is a new version with a later
``effective_from`` (at least 60 s ahead, see ``controlplane/actions/prices``).
The listing shows the config's versions and the admin API's, each with its
``source``: together they are the catalogue the ledger prices with.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from lockgate.controlplane.actions.prices import PriceActions, price_summary
from lockgate.controlplane.admin.deps import Caller, Services
from lockgate.errors import ClientError, PermissionDenied
from lockgate.metering.pricing import PriceEntry
from lockgate.tenancy.rbac import ROLE_PERMISSIONS, Permission

router = APIRouter(prefix="/admin/v1/prices")
Price = Annotated[Decimal, Field(ge=0, allow_inf_nan=False, max_digits=30)]


class PriceIn(BaseModel):
    """A new version. Prices are currency units per million tokens, as decimals
    (send strings, e.g. "0.15", to keep them exact)."""

    model_config = ConfigDict(extra="forbid")

    model: Annotated[str, Field(min_length=1, max_length=200)]
    deployment: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    effective_from: AwareDatetime
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] | None = None
    input_per_million: Price = Decimal(0)
    output_per_million: Price = Decimal(0)
    cached_input_per_million: Price | None = None
    request_fee: Price = Decimal(0)


class PriceOut(BaseModel):
    object: Literal["price"] = "price"
    id: str
    source: Literal["config", "admin"]
    model: str
    deployment: str | None
    effective_from: datetime
    currency: str
    input_per_million: str
    output_per_million: str
    cached_input_per_million: str | None
    request_fee: str
    created_at: datetime | None
    created_by: str | None


class PriceList(BaseModel):
    object: Literal["list"] = "list"
    data: list[PriceOut]
    has_more: bool


class PricesNotManaged(ClientError):
    status = 404
    code = "prices_not_managed"


def _out(
    entry: PriceEntry,
    source: Literal["config", "admin"],
    created_at: datetime | None = None,
    created_by: str | None = None,
) -> PriceOut:
    return PriceOut.model_validate(
        {
            **price_summary(entry),
            "source": source,
            "created_at": created_at,
            "created_by": created_by,
        }
    )


def _actions(request: Request) -> PriceActions:
    actions: PriceActions | None = getattr(request.app.state, "prices", None)
    if actions is None:
        raise PricesNotManaged("metering is disabled on this deployment: there are no prices")
    return actions


@router.post("", status_code=201)
async def add_price(body: PriceIn, request: Request, caller: Caller) -> PriceOut:
    """Add a version; it applies to requests from ``effective_from`` on."""
    caller.require(Permission.PRICE_MANAGE, None)
    version = await _actions(request).add_price(
        caller.actor,
        model=body.model,
        deployment=body.deployment,
        effective_from=body.effective_from,
        currency=body.currency,
        input_per_million=body.input_per_million,
        output_per_million=body.output_per_million,
        cached_input_per_million=body.cached_input_per_million,
        request_fee=body.request_fee,
    )
    return _out(version.entry, "admin", version.created_at, version.created_by)


@router.get("")
async def list_prices(
    request: Request,
    caller: Caller,
    svc: Services,
    model: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 500,
    after: str | None = None,
) -> PriceList:
    """Config versions first (by model, then start), then admin versions by id; page the
    latter with ``after`` (the last admin version's id)."""
    if not (
        caller.is_superadmin
        or any(Permission.USAGE_READ in ROLE_PERMISSIONS[g.role] for g in caller.grants)
    ):
        raise PermissionDenied("You lack the 'usage.read' permission anywhere.")
    config = () if after is not None else _actions(request).config_prices
    data = [
        _out(e, "config")
        for e in sorted(config, key=lambda e: (e.model, e.deployment or "", e.effective_from))
        if model is None or e.model == model
    ]
    stored = await svc.store.usage.prices.list(model=model, limit=limit + 1, after=after)
    data += [_out(v.entry, "admin", v.created_at, v.created_by) for v in stored[:limit]]
    return PriceList(data=data, has_more=len(stored) > limit)
