"""A small fleet for routing tests: several simulators as replicas of one model.

Each replica is its own ``SimServer`` (own port, own counters, own faults), so a
test can break, slow down, kill and restart one of them while the others carry
on, and count exactly what each one received.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from lockgate.config import GatewaySpec
from lockgate.routing.member import Member
from lockgate.sim import SimConfig, SimServer
from tests.support import RawResponse, RunningGateway, raw_request

# Instant answers: tests measure routing, not the simulator.
FAST = SimConfig(ttft_ms=0, tokens_per_s=0, output_tokens=4)
# Health and retry knobs off, so a test sees one mechanism at a time.
QUIET: dict[str, Any] = {"outlier": {"enabled": False}, "breaker": {"enabled": False}}


def sim_config(**fields: Any) -> SimConfig:
    return FAST.model_copy(update=fields)


@asynccontextmanager
async def replicas(*configs: SimConfig) -> AsyncIterator[list[SimServer]]:
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(SimServer(c, host="127.0.0.1")) for c in configs]


def url(target: SimServer | int) -> str:
    port = target if isinstance(target, int) else target.port
    return f"http://127.0.0.1:{port}/v1"


def model(
    name: str,
    targets: list[SimServer | int],
    *,
    routing: dict[str, Any] | None = None,
    fallbacks: list[Any] | None = None,
    **per_deployment: list[Any],
) -> dict[str, Any]:
    """Model ``name`` with deployments ``<name>-r0``, ``-r1``… (a port: nothing listening
    there, or a replica to be started later). ``per_deployment``: field -> value per target."""
    deployments = []
    for index, target in enumerate(targets):
        dep: dict[str, Any] = {
            "name": f"{name}-r{index}",
            "base_url": url(target),
            "forward_headers": ["x-sim-*"],
        }
        for field, values in per_deployment.items():
            dep[field] = values[index]
        deployments.append(dep)
    spec: dict[str, Any] = {"name": name, "deployments": deployments}
    if routing is not None:
        spec["routing"] = routing
    if fallbacks is not None:
        spec["fallbacks"] = fallbacks
    return spec


def spec(models: list[dict[str, Any]], routing: dict[str, Any] | None = None) -> GatewaySpec:
    """Admission off: its capacity queue would reorder requests under the strategies' feet."""
    return GatewaySpec.model_validate(
        {
            "server": {"port": 0},
            "admission": {"enabled": False},
            "routing": routing or {},
            "models": models,
        }
    )


def chat_body(model_name: str, content: str = "Tell me about rivers", **fields: Any) -> bytes:
    messages = fields.pop("messages", [{"role": "user", "content": content}])
    return json.dumps({"model": model_name, "messages": messages, **fields}).encode()


async def chat(
    port: int,
    model_name: str,
    content: str = "Tell me about rivers",
    *,
    headers: dict[str, str] | None = None,
    timeout_s: float = 10.0,
    **fields: Any,
) -> RawResponse:
    return await raw_request(
        port,
        "POST",
        "/v1/chat/completions",
        chat_body(model_name, content, **fields),
        {"content-type": "application/json", **(headers or {})},
        timeout_s=timeout_s,
    )


def served_by(response: RawResponse) -> str:
    assert response.status == 200, response.body
    return response.headers["x-lockgate-deployment"]


def members(gw: RunningGateway, model_name: str) -> dict[str, Member]:
    """The live routing state of a model's deployments, by deployment name."""
    pool = gw.gateway.dataplane.router.plan_for(model_name).pool
    return {m.name: m for m in pool.members}


def requests_seen(*sims: SimServer) -> int:
    return sum(s.engine.requests_total for s in sims)


def closed_port() -> int:
    """A loopback port nothing listens on (bound once, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
