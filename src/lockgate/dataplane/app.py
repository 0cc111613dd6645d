"""The data-plane HTTP handler: a route table and one dispatch function.

Built once per worker from the runtime config; owns the stages and the
upstream pools. ``handle`` is what the HTTP server calls for every request.
"""

from __future__ import annotations

import os
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from lockgate import clock
from lockgate.config import RuntimeConfig
from lockgate.dataplane import pipeline
from lockgate.dataplane.api.openai import (
    models_list,
    read_inference_request,
    read_passthrough_request,
)
from lockgate.dataplane.context import RequestContext
from lockgate.dataplane.idempotency import IdempotencyStore, build_idempotency
from lockgate.dataplane.pipeline import Stages
from lockgate.dataplane.pipeline.admit import AdmitAll, Admitter
from lockgate.dataplane.pipeline.authenticate import AnonymousAuthenticator, Authenticator
from lockgate.dataplane.pipeline.authorize import AllowAll, Authorizer
from lockgate.dataplane.pipeline.forward import Forwarder
from lockgate.dataplane.pipeline.route import BalancingRouter
from lockgate.dataplane.pipeline.settle import Settler, UsageTotals
from lockgate.dataplane.probes import HttpMetricsFetch, HttpProbe
from lockgate.dataplane.response_headers import error_headers, send_error
from lockgate.dataplane.upstreams import Upstreams
from lockgate.errors import (
    ClientError,
    EndpointNotFound,
    GatewayError,
    MethodNotAllowed,
    RequestTooLarge,
)
from lockgate.http.server import Connection, HttpRequest
from lockgate.operations import Operation
from lockgate.routing.engine_load import EngineLoadScraper

if TYPE_CHECKING:
    from lockgate.observability.tracing import Tracing

_INFERENCE_ROUTES = {
    "/v1/chat/completions": Operation.CHAT,
    "/v1/completions": Operation.COMPLETIONS,
    "/v1/embeddings": Operation.EMBEDDINGS,
}
_JSON = b"content-type: application/json\r\n"
# A client-supplied request id is echoed only if it is short and plain.
_CLIENT_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")


class RequestIds:
    """Unique request ids without a syscall per request.

    A random per-process prefix (unique across workers and restarts) plus a
    counter: ids need to be unique, not secret.
    """

    __slots__ = ("_counter", "_prefix")

    def __init__(self) -> None:
        self._prefix = os.urandom(6).hex()
        self._counter = 0

    def next(self) -> str:
        self._counter += 1
        return "%s%012x" % (self._prefix, self._counter)  # noqa: UP031 - fastest form


class DataPlane:
    def __init__(
        self,
        config: RuntimeConfig,
        *,
        settler: Settler | None = None,
        authenticator: Authenticator | None = None,
        authorizer: Authorizer | None = None,
        admitter: Admitter | None = None,
        on_request: Callable[[], None] | None = None,
        tracing: Tracing | None = None,
        idempotency: IdempotencyStore | None = None,
        acknowledge: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.config = config
        # Told of every request entering the pipeline (the in-flight gauge).
        self._on_request = on_request
        # Gives each request its trace context; None (tracing off): no OpenTelemetry at all.
        # Its settler (the spans) must be among ``settler``'s.
        self.tracing = tracing
        self.upstreams = Upstreams(config)
        self.router = BalancingRouter(config, probe=HttpProbe(self.upstreams))
        self.router.start()  # active health checks, if any model configures them
        # Engine metrics (routing.engine_metrics) for the load score; ``engine_load.waiting``
        # is the engines' own queue, for admission.
        pools = {
            id(pool): pool
            for m in config.models
            for entry in (m.versions or (m,))
            if (pool := self.router.pool_of(entry.name)) is not None
        }

        # Idempotency-Key replays: in process unless scale-out passes a Redis-backed store.
        self.idempotency = idempotency or build_idempotency(config.routing.idempotency)
        self.settler: Settler = settler if settler is not None else UsageTotals()
        self.stages = Stages(
            authenticator=authenticator or AnonymousAuthenticator(),
            authorizer=authorizer or AllowAll(),
            admitter=admitter or default_admitter(config),
            router=self.router,
            forwarder=Forwarder(self.upstreams, idempotency=self.idempotency),
            settler=self.settler,
            max_response_bytes=config.server.max_response_bytes,
            acknowledge=acknowledge,
        )
        self.engine_load = EngineLoadScraper(
            list(pools.values()),
            HttpMetricsFetch(self.upstreams),
            on_round=engine_report_to(self.stages.admitter),
        )
        self.engine_load.start()
        names = [name for m in config.models for name in (m.name, *m.aliases)]
        self._models_body = models_list(names)
        self.is_draining = False
        # The cached readiness verdict, ``() -> (status, JSON body)``; None: always ready.
        self.readiness: Callable[[], tuple[int, bytes]] | None = None
        self._request_ids = RequestIds()

    async def handle(self, request: HttpRequest, conn: Connection) -> None:
        header_id = request.headers.get(b"x-request-id")
        if header_id is not None and _CLIENT_REQUEST_ID.match(header_id):
            request_id = header_id.decode()
        else:
            request_id = self._request_ids.next()
        path = request.path
        operation = _INFERENCE_ROUTES.get(path)
        if operation is None:
            if path.startswith("/v1/") and self.router.serves_passthrough(path):
                operation = Operation.PASSTHROUGH
            else:
                self._serve_static(request, conn, request_id)
                return
        if request.method != b"POST":
            not_allowed = MethodNotAllowed(f"Use POST for {path}.", headers=((b"allow", b"POST"),))
            send_error(conn, request_id, not_allowed)
            return
        ctx = RequestContext(request_id, request, operation, clock.now())
        ctx.client_ip = conn.client_ip
        if self.tracing is not None:
            ctx.trace = self.tracing.begin(request.headers)
        reader = (
            read_passthrough_request
            if operation is Operation.PASSTHROUGH
            else read_inference_request
        )
        if self._on_request is not None:
            self._on_request()
        await pipeline.run(self.stages, ctx, conn, reader)

    def _serve_static(self, request: HttpRequest, conn: Connection, request_id: str) -> None:
        path = request.path
        if path == "/v1/models" and request.method == b"GET":
            conn.respond(
                200, _JSON + b"x-request-id: %s\r\n" % request_id.encode(), self._models_body
            )
        elif path == "/healthz":
            conn.respond(200, _JSON, b'{"status":"ok"}')
        elif path == "/readyz":
            if self.is_draining:
                conn.respond(503, _JSON, b'{"status":"draining"}')
            elif self.readiness is None:
                conn.respond(200, _JSON, b'{"status":"ready"}')
            else:
                status, body = self.readiness()
                conn.respond(status, _JSON, body)
        else:
            not_found = EndpointNotFound(f"Unknown endpoint {request.method.decode()} {path}.")
            send_error(conn, request_id, not_found)

    def close(self) -> None:
        self.router.close()
        self.engine_load.close()
        self.upstreams.close()


def engine_report_to(admitter: Admitter) -> Callable[[str, float | None], None] | None:
    """Where engines' queue readings go: the limit admitter's capacity gates, if any."""
    from lockgate.admission.admitter import LimitAdmitter

    return admitter.engines_report if isinstance(admitter, LimitAdmitter) else None


def default_admitter(config: RuntimeConfig) -> Admitter:
    """In-process limits (exact in one process); scale-out passes a Redis-backed one."""
    if not config.admission.enabled:
        return AdmitAll()
    from lockgate.admission.admitter import LimitAdmitter
    from lockgate.admission.local import LocalLimiter

    return LimitAdmitter(LocalLimiter(), config.admission)


def render_rejection(status: int, message: bytes) -> tuple[bytes, bytes]:
    """Requests refused by the HTTP layer itself (400, 413, 431), in our error shape."""
    error: GatewayError
    if status == 413:
        error = RequestTooLarge(
            "The request body exceeds the configured limit (server.max_body_bytes)."
        )
    else:
        error = ClientError(message.decode() + ".")
    return error_headers("-", error), error.body()
