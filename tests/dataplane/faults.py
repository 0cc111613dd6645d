"""Helpers for the fault tests: requests, injected faults, and what a clean error is."""

from __future__ import annotations

import json
import socket
from typing import Any

from tests.support import RawResponse, raw_request

MESSAGES = [{"role": "user", "content": "Tell me about the river and the stone"}]
ERROR_FIELDS = ["code", "message", "param", "type"]


def chat_body(model: str = "sim-chat", **fields: Any) -> bytes:
    return json.dumps({"model": model, "messages": MESSAGES, **fields}).encode()


async def post(
    port: int,
    body: bytes,
    headers: dict[str, str] | None = None,
    path: str = "/v1/chat/completions",
) -> RawResponse:
    return await raw_request(
        port, "POST", path, body, {"content-type": "application/json", **(headers or {})}
    )


def fault(kind: str, **options: int | float) -> dict[str, str]:
    """Headers asking the simulator for ``kind``; options become ``x-sim-<name>`` headers."""
    headers = {"x-sim-fault": kind}
    for name, value in options.items():
        headers[f"x-sim-{name.replace('_', '-')}"] = str(value)
    return headers


def assert_error(
    response: RawResponse, status: int, code: str, source: str, param: str | None = None
) -> dict[str, Any]:
    """A complete error answer: status, attribution headers and the OpenAI error shape."""
    assert response.status == status, response.body
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-lockgate-error-source"] == source
    assert response.headers["x-lockgate-error-code"] == code
    assert response.headers.get("x-request-id"), "errors must carry the request id"
    error: dict[str, Any] = json.loads(response.body)["error"]
    assert sorted(error) == ERROR_FIELDS
    assert error["code"] == code
    assert error["param"] == param
    assert isinstance(error["message"], str)
    assert error["message"]
    return error


def in_band_error(response: RawResponse) -> tuple[list[bytes], dict[str, Any]]:
    """A stream that started fine and ended with an error event instead of ``[DONE]``."""
    assert response.status == 200, response.body
    assert response.headers["content-type"].startswith("text/event-stream")
    events = response.sse_data()
    assert b"[DONE]" not in events, "a broken stream must not end looking complete"
    error: dict[str, Any] = json.loads(events[-1])["error"]
    assert sorted(error) == ERROR_FIELDS
    return events[:-1], error


async def assert_healthy(port: int, model: str = "sim-chat") -> None:
    """A normal request right after a failure still succeeds."""
    response = await post(port, chat_body(model))
    assert response.status == 200, response.body
    answer = json.loads(response.body)
    assert answer["model"] == model
    assert answer["choices"][0]["message"]["content"]


def closed_port() -> int:
    """A loopback port nothing listens on (bound once, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
