"""Building settled request contexts and records for the metering tests."""

from __future__ import annotations

from datetime import UTC, datetime

from lockgate.config.runtime import DeploymentTarget, ModelEntry
from lockgate.config.spec import Timeouts
from lockgate.dataplane.context import Principal, RequestContext
from lockgate.errors import GatewayError
from lockgate.http.connection import HttpRequest
from lockgate.metering.record import UsageRecord
from lockgate.operations import Operation
from lockgate.usage import Usage


def deployment(name: str = "vllm-a", model: str = "llama") -> DeploymentTarget:
    return DeploymentTarget(
        name=name,
        model_name=model,
        scheme="http",
        host="127.0.0.1",
        port=8000,
        base_path="/v1",
        upstream_model="meta-llama/Llama-3.1-8B-Instruct",
        authorization=None,
        timeouts=Timeouts(),
        passthrough=frozenset(),
        forward_headers=frozenset(),
        forward_header_prefixes=(),
    )


def principal(org: str = "org_a", project: str = "prj_a", key: str = "key_a") -> Principal:
    return Principal(
        id=f"api_key:{key}", is_anonymous=False, organization_id=org, project_id=project
    )


def settled_context(
    request_id: str,
    *,
    usage: Usage | None = None,
    who: Principal | None = None,
    model: str = "llama",
    deployment_name: str = "vllm-a",
    body: bytes = b'{"model": "llama", "messages": []}',
    is_stream: bool = False,
    error: GatewayError | None = None,
    reached_upstream: bool = True,
    is_client_disconnected: bool = False,
) -> RequestContext:
    """A context as the pipeline leaves it at settle time (loop times around 1000 s)."""
    target = deployment(deployment_name, model)
    ctx = RequestContext(
        request_id,
        HttpRequest(b"POST", b"/v1/chat/completions", {}, body),
        Operation.CHAT,
        1000.0,
    )
    ctx.model = ModelEntry(name=model, aliases=(), deployments=(target,))
    ctx.requested_model = model
    ctx.principal = who or principal()
    ctx.is_stream = is_stream
    if reached_upstream:
        ctx.deployment = target
        ctx.upstream_sent_at = 1000.010
        ctx.upstream_first_byte_at = 1000.050
        ctx.first_byte_to_client_at = 1000.060 if is_stream else None
        ctx.upstream_done_at = 1000.200
    ctx.finished_at = 1000.250
    ctx.usage = usage
    ctx.error = error
    ctx.status = 200 if error is None else error.status
    ctx.is_client_disconnected = is_client_disconnected
    return ctx


def record(
    record_id: str,
    *,
    at: datetime | None = None,
    org: str | None = "org_a",
    project: str | None = "prj_a",
    key: str | None = "key_a",
    model: str = "llama",
    prompt: int = 10,
    completion: int = 5,
    cost_micros: int = 0,
    is_estimated: bool = False,
    error_code: str | None = None,
) -> UsageRecord:
    return UsageRecord(
        record_id=record_id,
        request_id=f"req-{record_id}",
        occurred_at=at or datetime(2026, 3, 1, 12, 0, tzinfo=UTC),
        organization_id=org,
        project_id=project,
        api_key_id=key,
        principal=f"api_key:{key}" if key else "anonymous",
        operation="chat.completions",
        model=model,
        upstream_model="engine-model",
        deployment="vllm-a",
        prompt_tokens=prompt,
        completion_tokens=completion,
        cached_tokens=0,
        reasoning_tokens=0,
        is_estimated=is_estimated,
        status=200 if error_code is None else 502,
        error_code=error_code,
        error_source=None if error_code is None else "upstream",
        ttft_ms=None,
        total_ms=12.5,
        is_stream=False,
        is_client_disconnected=False,
        price_id=None,
        currency=None,
        cost_micros=cost_micros,
    )
