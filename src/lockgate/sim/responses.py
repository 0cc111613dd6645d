"""OpenAI wire formats: JSON bodies, SSE events and error envelopes.

Key order and field sets follow OpenAI's responses so byte-level tests and
strict client SDKs see what they would see from the real API. Stream chunks
share a pre-rendered head per request and the ``choices`` part of each event
is encoded once per plan, which keeps instant-mode streaming cheap.
"""

from __future__ import annotations

from typing import Any

import orjson

JSON_HEADERS = b"content-type: application/json\r\n"
SSE_HEADERS = b"content-type: text/event-stream; charset=utf-8\r\ncache-control: no-cache\r\n"
PROMETHEUS_HEADERS = b"content-type: text/plain; version=0.0.4; charset=utf-8\r\n"
DONE_EVENT = b"data: [DONE]\n\n"
MALFORMED_EVENT = b"data: {not json\n\n"

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "server_error",
}


class ApiError(Exception):
    """An error answer in OpenAI's shape; raised anywhere while handling a request."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        reason: str = "invalid_request",
        headers: bytes = b"",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.reason = reason
        self.headers = headers

    def body(self) -> bytes:
        return error_body(self.status, self.message, code=self.code, param=self.param)


def error_body(
    status: int, message: str, *, code: str | None = None, param: str | None = None
) -> bytes:
    error = {
        "message": message,
        "type": _ERROR_TYPES.get(
            status, "server_error" if status >= 500 else "invalid_request_error"
        ),
        "param": param,
        "code": code,
    }
    return orjson.dumps({"error": error})


class ChunkHead:
    """The fixed part of every chunk of one stream, rendered once.

    ``include_usage`` adds ``"usage": null`` to every chunk, as OpenAI does
    when ``stream_options.include_usage`` is set.
    """

    __slots__ = ("_head", "_tail")

    def __init__(
        self, completion_id: str, obj: str, created: int, model: str, include_usage: bool
    ) -> None:
        head = orjson.dumps(
            {"id": completion_id, "object": obj, "created": created, "model": model}
        )
        self._head = b"data: " + head[:-1] + b',"choices":'
        self._tail = b',"usage":null}\n\n' if include_usage else b"}\n\n"

    def event(self, choices: bytes) -> bytes:
        """An event around pre-encoded ``choices`` (a JSON array)."""
        return self._head + choices + self._tail

    def event_with_usage(self, choices: bytes, usage: dict[str, Any]) -> bytes:
        return self._head + choices + b',"usage":' + orjson.dumps(usage) + b"}\n\n"


def chat_usage(prompt: int, completion: int, cached: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


def text_usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def tool_call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def chat_completion(
    completion_id: str,
    created: int,
    model: str,
    choices: list[dict[str, Any]],
    usage: dict[str, Any],
) -> bytes:
    return orjson.dumps(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": choices,
            "usage": usage,
        }
    )


def text_completion(
    completion_id: str,
    created: int,
    model: str,
    choices: list[dict[str, Any]],
    usage: dict[str, Any],
) -> bytes:
    return orjson.dumps(
        {
            "id": completion_id,
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": choices,
            "usage": usage,
        }
    )


def model_list(models: tuple[str, ...], created: int) -> bytes:
    data = [
        {"id": name, "object": "model", "created": created, "owned_by": "lockgate-sim"}
        for name in models
    ]
    return orjson.dumps({"object": "list", "data": data})
