"""The per-request state that flows through the pipeline stages."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network
from typing import TYPE_CHECKING, Any

from lockgate.admission.policy import TenantSettings
from lockgate.config import DeploymentTarget, ModelEntry
from lockgate.errors import GatewayError
from lockgate.http.server import HttpRequest
from lockgate.operations import Operation
from lockgate.usage import Usage

if TYPE_CHECKING:
    from collections.abc import Callable

    from lockgate.dataplane.idempotency import Claim
    from lockgate.dataplane.pipeline.continuation import Continuation
    from lockgate.observability.tracing_context import RequestTrace


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, as the authenticate stage established it.

    ``allowed_models`` empty means "every model"; ``allowed_networks`` empty
    means "from anywhere". Both are already the intersection of key and
    project settings, so authorisation reads them without further lookups.
    """

    id: str  # "api_key:<id>", "jwt:<issuer>#<subject>", or "anonymous"
    is_anonymous: bool = True
    organization_id: str | None = None
    project_id: str | None = None
    can_invoke: bool = True
    allowed_models: frozenset[str] = frozenset()
    allowed_networks: tuple[IPv4Network | IPv6Network, ...] = ()
    # The model's tags must include all of these (ABAC).
    required_model_tags: frozenset[tuple[str, str]] = frozenset()
    # Limits, caps and scheduling of the caller's key, project and organisation.
    admission: TenantSettings | None = None
    # The project opted in to having its prompts in the access log (redacted).
    log_prompts: bool = False


ANONYMOUS = Principal(id="anonymous")


@dataclass(slots=True)
class RequestContext:
    """Everything known about one request; stages read and fill it in order.

    Times are event-loop seconds (``loop.time()``); ``None`` means "not reached".
    """

    request_id: str
    http: HttpRequest
    operation: Operation
    started_at: float
    body: dict[str, Any] | None = None
    model: ModelEntry | None = None
    requested_model: str = ""
    is_stream: bool = False
    # True when the client asked for the usage chunk itself (stream_options.include_usage).
    wants_usage_chunk: bool = False
    principal: Principal = ANONYMOUS
    deployment: DeploymentTarget | None = None
    # Stage boundaries (traces, Server-Timing): authenticated; body read, model resolved
    # and authorised; admitted (after any wait in the saturation queue).
    authenticated_at: float | None = None
    admit_started_at: float | None = None
    admitted_at: float | None = None
    upstream_sent_at: float | None = None
    upstream_first_byte_at: float | None = None
    upstream_done_at: float | None = None
    first_byte_to_client_at: float | None = None
    finished_at: float | None = None
    status: int = 0
    usage: Usage | None = None
    # Streams: events with output relayed (about one token each); the ledger's estimate of
    # completion tokens when the stream ended without the upstream's usage.
    output_events: int = 0
    error: GatewayError | None = None
    is_client_disconnected: bool = False
    client_ip: str = ""
    # Rate-limit header lines (``name: value\r\n``) for whatever response goes out.
    limit_headers: bytes = b""
    # Set by forward: how a broken stream may be continued elsewhere (None: it may not),
    # and the Idempotency-Key claim whose answer the relay stores (None: no key).
    continuation: Continuation | None = None
    idempotency: Claim | None = None
    # The request's trace (W3C trace context, attempts): None whenever tracing is off.
    trace: RequestTrace | None = None
    # Set by relay when the end of the response waits for the usage record to be
    # durable (metering.acknowledge = durable): sends the response's last bytes.
    held_end: Callable[[], None] | None = None
