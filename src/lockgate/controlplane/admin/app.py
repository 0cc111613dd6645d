"""Builds the admin FastAPI app and serves it on its own port."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Awaitable, Callable, Iterator

import uvicorn
from fastapi import FastAPI, Response

from lockgate import __version__
from lockgate.controlplane.actions import AdminActions
from lockgate.controlplane.actions.deployments import DeploymentActions
from lockgate.controlplane.actions.prices import PriceActions
from lockgate.controlplane.actions.request_debug import RequestDebugActions
from lockgate.controlplane.admin import (
    routes_audit,
    routes_budgets,
    routes_deployments,
    routes_keys,
    routes_prices,
    routes_principals,
    routes_requests,
    routes_rollouts,
    routes_secrets,
    routes_tenants,
    routes_usage,
    routes_users,
    routes_webhooks,
)
from lockgate.controlplane.admin.auth import AdminAuthenticator
from lockgate.controlplane.admin.deps import AdminServices
from lockgate.controlplane.admin.errors import install_error_handlers
from lockgate.dataplane.pipeline.authenticate import CredentialAuthenticator
from lockgate.routing.shadow import ShadowSender
from lockgate.store.store import Store
from lockgate.tenancy.jwt import JwtVerifier

MetricsPage = Callable[[], Awaitable[tuple[str, bytes]]]


def create_admin_app(
    store: Store,
    actions: AdminActions,
    keys: CredentialAuthenticator,
    jwt: JwtVerifier | None,
    metrics: MetricsPage | None = None,
    *,
    request_debug: RequestDebugActions | None = None,
    readiness: Callable[[], tuple[int, bytes]] | None = None,
    prices: PriceActions | None = None,
    deployments: DeploymentActions | None = None,
    shadow: ShadowSender | None = None,
) -> FastAPI:
    app = FastAPI(
        title="Lockgate admin API",
        version=__version__,
        docs_url="/admin/docs",
        openapi_url="/admin/openapi.json",
        redoc_url=None,
    )
    app.state.services = AdminServices(store, actions, AdminAuthenticator(store, keys, jwt))
    install_error_handlers(app)
    app.include_router(routes_tenants.router, tags=["tenancy"])
    app.include_router(routes_users.router, tags=["users"])
    app.include_router(routes_principals.router, tags=["service accounts and roles"])
    app.include_router(routes_keys.router, tags=["api keys"])
    app.include_router(routes_secrets.router, tags=["upstream secrets"])
    app.include_router(routes_audit.router, tags=["audit"])
    app.include_router(routes_budgets.router, tags=["budgets"])
    app.include_router(routes_webhooks.router, tags=["webhooks"])
    app.include_router(routes_usage.router, tags=["usage"])
    # Price versions; adding needs the metering's PriceActions (None: metering is off).
    app.state.prices = prices
    app.include_router(routes_prices.router, tags=["prices"])
    # Runtime deployments, engine registration, rollouts (None: served by no one here).
    app.state.deployments = deployments
    app.state.shadow = shadow  # this process's shadow copies, for /rollouts/{model}/shadow
    app.include_router(routes_deployments.router, tags=["deployments"])
    app.include_router(routes_rollouts.router, tags=["rollouts"])
    # Request inspection, key debug sessions, and /healthz, /readyz on this port.
    routes_requests.install(app, request_debug, readiness)
    if metrics is not None:
        page = metrics

        # Unauthenticated, like every Prometheus target: the admin port belongs on an
        # internal network (see docs/operations.md); no tenant data is in the page
        # unless observability.metrics_by_project is on.
        @app.get("/metrics", include_in_schema=False)
        async def prometheus_metrics() -> Response:
            content_type, body = await page()
            return Response(content=body, media_type=content_type)

    return app


class _EmbeddedUvicorn(uvicorn.Server):
    """uvicorn that leaves signals alone: the worker's own handlers drain both planes."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class AdminServer:
    """uvicorn inside the worker's own event loop, on a socket we bind."""

    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # A reload's new admin worker binds while the old one drains (supervisor.py).
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        self._socket.bind((host, port))
        self.port: int = self._socket.getsockname()[1]
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off")
        self._server = _EmbeddedUvicorn(config)

    async def serve(self) -> None:
        await self._server.serve(sockets=[self._socket])

    def stop(self) -> None:
        self._server.should_exit = True
