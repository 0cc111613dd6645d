"""Progressive rollouts of versioned models: read, change live, resume after a rollback.

A change is stored, audited and announced; every worker applies it within a
second (docs/routing.md#rollouts). An automatic rollback holds the candidate
at 0 % until an operator resumes it here: changing the percentage alone does
not undo it. ``/shadow`` shows the shadow copies this process recorded.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from lockgate.controlplane.actions.deployments import DeploymentActions
from lockgate.controlplane.admin.deps import Caller
from lockgate.controlplane.admin.routes_deployments import DeploymentsNotServed
from lockgate.routing.shadow import ShadowSender
from lockgate.tenancy.rbac import Permission

router = APIRouter(prefix="/admin/v1/rollouts")
_Percent = Annotated[float, Field(ge=0, le=100)]


class RolloutIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    candidate: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    percent: _Percent | None = None
    shadow_percent: _Percent | None = None


class RolloutOut(BaseModel):
    model: str
    default_version: str
    candidate: str | None
    percent: float
    shadow_percent: float
    is_rolled_back: bool
    reason: str | None


class RolloutList(BaseModel):
    object: str = "list"
    data: list[RolloutOut]


def _actions(request: Request) -> DeploymentActions:
    actions: DeploymentActions | None = getattr(request.app.state, "deployments", None)
    if actions is None:
        raise DeploymentsNotServed("rollouts are not managed by this process")
    return actions


@router.get("")
async def list_rollouts(request: Request, caller: Caller) -> RolloutList:
    caller.require(Permission.DEPLOYMENTS_MANAGE, None)
    actions = _actions(request)
    names = [m.name for m in actions.config.models if m.versions]
    return RolloutList(data=[RolloutOut(**await actions.get_rollout(n)) for n in names])


@router.get("/{model:path}/shadow")
async def shadow_records(model: str, request: Request, caller: Caller) -> dict[str, Any]:
    """This process's shadow copies of ``model`` (latest last) and their totals."""
    caller.require(Permission.DEPLOYMENTS_MANAGE, None)
    sender: ShadowSender | None = getattr(request.app.state, "shadow", None)
    if sender is None:
        return {"model": model, "totals": None, "data": []}
    totals = sender.totals.get(model)
    return {
        "model": model,
        "totals": None if totals is None else _counts(totals),
        "data": [
            {
                "request_id": r.request_id,
                "candidate": r.candidate,
                "primary_status": r.primary_status,
                "primary_latency_ms": r.primary_latency_ms,
                "primary_completion_tokens": r.primary_completion_tokens,
                "shadow_status": r.shadow.status if r.shadow else None,
                "shadow_latency_ms": r.shadow.latency_ms if r.shadow else None,
                "shadow_completion_tokens": r.shadow.completion_tokens if r.shadow else None,
                "shadow_error": r.shadow.error if r.shadow else None,
                "is_output_match": r.is_output_match,
            }
            for r in sender.records(model)
        ],
    }


@router.post("/{model:path}/resume")
async def resume_rollout(model: str, request: Request, caller: Caller) -> RolloutOut:
    caller.require(Permission.DEPLOYMENTS_MANAGE, None)
    return RolloutOut(**await _actions(request).resume_rollout(caller.actor, model))


@router.get("/{model:path}")
async def get_rollout(model: str, request: Request, caller: Caller) -> RolloutOut:
    caller.require(Permission.DEPLOYMENTS_MANAGE, None)
    return RolloutOut(**await _actions(request).get_rollout(model))


@router.patch("/{model:path}")
async def set_rollout(model: str, body: RolloutIn, request: Request, caller: Caller) -> RolloutOut:
    """Change the candidate, its share, or the shadowed share (fields left out stay)."""
    caller.require(Permission.DEPLOYMENTS_MANAGE, None)
    state = await _actions(request).set_rollout(
        caller.actor,
        model,
        candidate=body.candidate,
        percent=body.percent,
        shadow_percent=body.shadow_percent,
    )
    return RolloutOut(**state)


def _counts(totals: Any) -> dict[str, int]:
    return {name: getattr(totals, name) for name in totals.__slots__}
