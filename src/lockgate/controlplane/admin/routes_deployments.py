"""Deployments at runtime: operators add and remove them; engines register themselves.

Operators (``deployments.manage``: the superadmin) add a deployment of a
configured model (``name`` or ``name@version``), which serves until removed.
Engines — service accounts bound to the ``engine`` role, which carries only
``deployments.register`` — register themselves, heartbeat every
``heartbeat_interval_s`` (the registration answer says how often), and are
dropped by every worker ``expire_after_s`` after their last heartbeat. A
heartbeat for a lapsed registration answers 404 ``registration_expired``: the
engine registers again. See docs/routing.md#registration.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from lockgate.controlplane.actions.deployments import DeploymentActions, DeploymentInput
from lockgate.controlplane.admin.auth import AdminPrincipal
from lockgate.controlplane.admin.deps import Caller
from lockgate.errors import ClientError, PermissionDenied
from lockgate.routing.registry import serving_entries
from lockgate.store.repositories.deployments import RuntimeDeployment
from lockgate.tenancy.rbac import ROLE_PERMISSIONS, Permission

router = APIRouter(prefix="/admin/v1/deployments")
_Name = Annotated[str, Field(min_length=1, max_length=200)]


class DeploymentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: _Name  # a configured model, or name@version
    name: _Name
    base_url: Annotated[str, Field(min_length=1, max_length=2000)]
    upstream_model: _Name | None = None
    capacity: Annotated[int, Field(ge=1)] | None = None
    weight: Annotated[float, Field(gt=0, le=1_000_000)] = 1.0
    tags: dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=256)]] = {}


class DeploymentRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: _Name
    name: _Name


class DeploymentOut(BaseModel):
    object: Literal["deployment"] = "deployment"
    model: str
    name: str
    base_url: str
    upstream_model: str | None
    capacity: int | None
    weight: float
    tags: dict[str, str]
    source: Literal["config", "admin", "engine"]
    expires_at: datetime | None = None


class RegistrationOut(DeploymentOut):
    heartbeat_interval_s: float
    expire_after_s: float


class DeploymentList(BaseModel):
    object: Literal["list"] = "list"
    data: list[DeploymentOut]


class DeploymentsNotServed(ClientError):
    status = 404
    code = "deployments_not_served"


class RegistrationExpired(ClientError):
    status = 404
    code = "registration_expired"


def _actions(request: Request) -> DeploymentActions:
    actions: DeploymentActions | None = getattr(request.app.state, "deployments", None)
    if actions is None:
        raise DeploymentsNotServed("runtime deployments are not managed by this process")
    return actions


def _require_register(caller: AdminPrincipal) -> None:
    """``deployments.register`` in any grant: an engine's role is bound in the operator's
    organisation, but what it registers serves the whole deployment."""
    if not any(Permission.DEPLOYMENTS_REGISTER in ROLE_PERMISSIONS[g.role] for g in caller.grants):
        raise PermissionDenied("You lack the 'deployments.register' permission.")


def _out(dep: RuntimeDeployment) -> DeploymentOut:
    return DeploymentOut(
        model=dep.model,
        name=dep.name,
        base_url=dep.base_url,
        upstream_model=dep.upstream_model,
        capacity=dep.capacity,
        weight=dep.weight,
        tags=dict(dep.tags),
        source="engine" if dep.source == "engine" else "admin",
        expires_at=dep.expires_at,
    )


def _input(body: DeploymentIn) -> DeploymentInput:
    return DeploymentInput(
        name=body.name,
        base_url=body.base_url,
        upstream_model=body.upstream_model,
        capacity=body.capacity,
        weight=body.weight,
        tags=body.tags,
    )


@router.get("")
async def list_deployments(
    request: Request, caller: Caller, model: str | None = None
) -> DeploymentList:
    """Configured deployments and the live runtime ones, by model."""
    caller.require(Permission.DEPLOYMENTS_MANAGE, None)
    actions = _actions(request)
    configured = [
        DeploymentOut(
            model=name,
            name=d.name,
            base_url=f"{d.scheme}://{d.host}:{d.port}{d.base_path}",
            upstream_model=d.upstream_model,
            capacity=d.capacity,
            weight=d.weight,
            tags={},
            source="config",
        )
        for name, entry in serving_entries(actions.config.models).items()
        for d in entry.deployments
    ]
    runtime = [_out(d) for d in await actions.live()]
    data = [d for d in (*configured, *runtime) if model is None or d.model == model]
    return DeploymentList(data=data)


@router.post("", status_code=201)
async def add_deployment(body: DeploymentIn, request: Request, caller: Caller) -> DeploymentOut:
    caller.require(Permission.DEPLOYMENTS_MANAGE, None)
    return _out(await _actions(request).add(caller.actor, body.model, _input(body)))


@router.delete("", status_code=204)
async def remove_deployment(
    request: Request,
    caller: Caller,
    model: Annotated[str, Query(min_length=1)],
    name: Annotated[str, Query(min_length=1)],
) -> Response:
    caller.require(Permission.DEPLOYMENTS_MANAGE, None)
    await _actions(request).remove(caller.actor, model, name, source="admin")
    return Response(status_code=204)


@router.post("/register", status_code=201)
async def register(body: DeploymentIn, request: Request, caller: Caller) -> RegistrationOut:
    """An engine registers (or re-registers) itself; heartbeat to stay registered."""
    _require_register(caller)
    actions = _actions(request)
    dep = await actions.register(caller.actor, body.model, _input(body))
    spec = actions.registration
    return RegistrationOut(
        **_out(dep).model_dump(exclude={"object"}),
        heartbeat_interval_s=spec.heartbeat_interval_s,
        expire_after_s=spec.expire_after_s,
    )


@router.post("/heartbeat", status_code=204)
async def heartbeat(body: DeploymentRef, request: Request, caller: Caller) -> Response:
    _require_register(caller)
    if not await _actions(request).heartbeat(body.model, body.name):
        raise RegistrationExpired(
            f"'{body.name}' of '{body.model}' is not registered (its registration lapsed "
            "or was removed): register again."
        )
    return Response(status_code=204)


@router.post("/deregister", status_code=204)
async def deregister(body: DeploymentRef, request: Request, caller: Caller) -> Response:
    """An engine leaving on purpose (shutdown): it stops getting traffic at once."""
    _require_register(caller)
    await _actions(request).remove(caller.actor, body.model, body.name, source="engine")
    return Response(status_code=204)
