"""Operator debugging: one request's record (``lockgate inspect``), a key's debug sessions,
and the admin port's liveness and readiness probes.

``GET /admin/v1/requests/{request_id}`` shows what the ledger and any debug
session captured about a request, to callers who may read usage in that
request's organisation and project; the detail of a debug session also needs
``api_key.read`` there. A request the caller may not see is a 404, as one that
does not exist: other tenants' request ids are not theirs to probe.

``POST …/api_keys/{key_id}/debug`` starts capturing the key's next N requests
at full detail (``api_key.manage``: whoever may revoke the key may watch it);
``DELETE`` stops it. Both are audited.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from pydantic import BaseModel, Field

from lockgate.controlplane.actions.request_debug import RequestDebugActions
from lockgate.controlplane.admin.deps import Caller, Services
from lockgate.controlplane.admin.errors import AdminNotFound
from lockgate.controlplane.admin.schemas import Body
from lockgate.errors import GatewayError
from lockgate.observability.debug_model import (
    DEFAULT_DEBUG_TTL_S,
    MAX_DEBUG_REQUESTS,
    MAX_DEBUG_TTL_S,
    DebugSession,
)
from lockgate.store.columns import utc_now
from lockgate.store.repositories.request_debug import request_debug
from lockgate.tenancy.rbac import Permission

router = APIRouter(prefix="/admin/v1")
ReadinessAnswer = Callable[[], tuple[int, bytes]]


class DebuggingUnavailable(GatewayError):
    status = 503
    code = "request_debugging_unavailable"


def _actions(request: Request) -> RequestDebugActions:
    actions: RequestDebugActions | None = getattr(request.app.state, "request_debug", None)
    if actions is None:
        raise DebuggingUnavailable("Request debugging is not available on this admin API.")
    return actions


DebugActions = Annotated[RequestDebugActions, Depends(_actions)]


class DebugIn(Body):
    requests: Annotated[int, Field(ge=1, le=MAX_DEBUG_REQUESTS)] = 10
    # The session ends after this long even if fewer requests came.
    ttl_s: Annotated[int, Field(ge=10, le=MAX_DEBUG_TTL_S)] = DEFAULT_DEBUG_TTL_S


class DebugSessionOut(BaseModel):
    id: str
    organization_id: str
    project_id: str
    api_key_id: str
    requested: int
    remaining: int
    captured: int
    is_active: bool
    created_by: str
    created_at: str
    expires_at: str


class DebugSessionsOut(BaseModel):
    object: str = "list"
    data: list[DebugSessionOut]


class RequestDetailOut(BaseModel):
    """Everything known about one request id (usually one record of each kind)."""

    request_id: str
    usage_records: list[dict[str, Any]]
    debug_records: list[dict[str, Any]]


def _session_out(session: DebugSession) -> DebugSessionOut:
    return DebugSessionOut.model_validate(session.to_json(utc_now()))


async def _key_project(org_id: str, key_id: str, permission: Permission, caller: Caller,
                       svc: Services) -> str:  # fmt: skip
    """The key's project, if the caller holds ``permission`` on it; 404 across tenants."""
    caller.require_any_in(org_id)
    key = await svc.store.api_keys.get(key_id, organization_id=org_id)
    caller.require(permission, org_id, key.project_id)
    return key.project_id


@router.post("/organizations/{org_id}/api_keys/{key_id}/debug", status_code=201)
async def start_debug(
    org_id: str, key_id: str, body: DebugIn, caller: Caller, svc: Services, actions: DebugActions
) -> DebugSessionOut:
    """Capture the key's next ``requests`` requests at full detail (attempts, timings,
    headers without credentials; never prompt or completion content), for at most
    ``ttl_s`` seconds. Every gateway worker and replica hears of it within seconds."""
    await _key_project(org_id, key_id, Permission.KEY_MANAGE, caller, svc)
    session = await actions.start(
        caller.actor,
        organization_id=org_id,
        key_id=key_id,
        requests=body.requests,
        ttl_s=body.ttl_s,
    )
    return _session_out(session)


@router.get("/organizations/{org_id}/api_keys/{key_id}/debug")
async def list_debug(org_id: str, key_id: str, caller: Caller, svc: Services) -> DebugSessionsOut:
    """The key's debug sessions, newest first."""
    await _key_project(org_id, key_id, Permission.KEY_READ, caller, svc)
    sessions = await request_debug(svc.store).list_sessions(
        organization_id=org_id, api_key_id=key_id
    )
    return DebugSessionsOut(data=[_session_out(s) for s in sessions])


@router.delete("/organizations/{org_id}/api_keys/{key_id}/debug")
async def stop_debug(
    org_id: str, key_id: str, caller: Caller, svc: Services, actions: DebugActions
) -> DebugSessionsOut:
    """End the key's active debug sessions (what was captured stays readable)."""
    await _key_project(org_id, key_id, Permission.KEY_MANAGE, caller, svc)
    stopped = await actions.stop(caller.actor, organization_id=org_id, key_id=key_id)
    return DebugSessionsOut(data=[_session_out(s) for s in stopped])


@router.get("/requests/{request_id}")
async def inspect_request(request_id: str, caller: Caller, svc: Services) -> RequestDetailOut:
    """The request's usage record(s) and, when a debug session captured it, its
    attempts, timings and headers. 404 when there is nothing the caller may see."""
    repository = request_debug(svc.store)
    usage = [
        record.to_json()
        for record in await repository.usage_for_request(request_id)
        # An anonymous request has no organisation: only the deployment's superadmins.
        if caller.allows(Permission.USAGE_READ, record.organization_id, record.project_id)
    ]
    debug = [
        record.to_json()
        for record in await repository.records_for_request(request_id)
        if caller.allows(Permission.USAGE_READ, record.organization_id, record.project_id)
        and caller.allows(Permission.KEY_READ, record.organization_id, record.project_id)
    ]
    if not usage and not debug:
        raise AdminNotFound(f"request {request_id!r} not found")
    return RequestDetailOut(request_id=request_id, usage_records=usage, debug_records=debug)


def install(
    app: FastAPI,
    actions: RequestDebugActions | None,
    readiness: ReadinessAnswer | None,
) -> None:
    """Add these routes to the admin app, and ``/healthz``, ``/readyz`` on its port."""
    app.state.request_debug = actions
    app.include_router(router, tags=["request debugging"])

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Response:
        return Response(content=b'{"status":"ok"}', media_type="application/json")

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        status, body = readiness() if readiness is not None else (200, b'{"status":"ready"}')
        return Response(content=body, status_code=status, media_type="application/json")
