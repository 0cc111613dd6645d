"""Shared test helpers: a real gateway in the test's event loop, and raw HTTP for exact bytes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import orjson

from lockgate.config import GatewaySpec, resolve
from lockgate.dataplane.pipeline.authenticate import Authenticator
from lockgate.dataplane.pipeline.authorize import Authorizer
from lockgate.dataplane.pipeline.settle import UsageTotals
from lockgate.serve import Gateway


def gateway_spec(models: list[dict[str, Any]], **server: Any) -> GatewaySpec:
    return GatewaySpec.model_validate({"server": {"port": 0, **server}, "models": models})


def sim_model(name: str, base_url: str, **deployment: Any) -> dict[str, Any]:
    """One model served by one simulator deployment that forwards the x-sim-* test headers."""
    dep = {"name": f"{name}-d1", "base_url": base_url, "forward_headers": ["x-sim-*"]}
    dep.update(deployment)
    return {"name": name, "deployments": [dep]}


@dataclass
class RunningGateway:
    gateway: Gateway
    totals: UsageTotals

    @property
    def port(self) -> int:
        return self.gateway.port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


@asynccontextmanager
async def running_gateway(
    spec: GatewaySpec,
    *,
    authenticator: Authenticator | None = None,
    authorizer: Authorizer | None = None,
) -> AsyncIterator[RunningGateway]:
    totals = UsageTotals()
    gateway = Gateway(
        resolve(spec), settler=totals, authenticator=authenticator, authorizer=authorizer
    )
    await gateway.start()
    try:
        yield RunningGateway(gateway, totals)
    finally:
        await gateway.stop(drain_timeout_s=1.0)


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def sse_data(self) -> list[bytes]:
        """The ``data:`` payloads of an SSE body, in order."""
        return [
            line[6:]
            for event in self.body.split(b"\n\n")
            for line in event.split(b"\n")
            if line.startswith(b"data: ")
        ]


async def raw_request(
    port: int,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    timeout_s: float = 10.0,
) -> RawResponse:
    """One HTTP/1.1 request on a fresh connection; decodes chunked bodies."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = f"{method} {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n"
        for name, value in (headers or {}).items():
            head += f"{name}: {value}\r\n"
        if body or method == "POST":
            head += f"content-length: {len(body)}\r\n"
        writer.write(head.encode() + b"\r\n" + body)
        return await asyncio.wait_for(_read_response(reader), timeout_s)
    finally:
        writer.close()


async def chat_as(
    port: int, key: str, body: bytes
) -> tuple[int, dict[str, str], dict[str, object]]:
    """``body`` to chat completions with ``key`` as the bearer: status, headers, JSON body."""
    answer = await raw_request(
        port, "POST", "/v1/chat/completions", body, {"authorization": f"Bearer {key}"}
    )
    return answer.status, answer.headers, orjson.loads(answer.body)


async def _read_response(reader: asyncio.StreamReader) -> RawResponse:
    status_line = await reader.readline()
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        parts = []
        while True:
            size = int((await reader.readline()).strip(), 16)
            if size == 0:
                await reader.readline()
                break
            parts.append(await reader.readexactly(size))
            await reader.readline()
        body = b"".join(parts)
    elif "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    else:
        body = await reader.read()
    return RawResponse(status, headers, body)
