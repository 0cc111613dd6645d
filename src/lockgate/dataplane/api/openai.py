"""The OpenAI-compatible surface: validate just enough to route and meter.

We check what the gateway itself relies on (a JSON object, a model name, the
fields that define the operation, the stream flags) and leave everything else
to the upstream, which knows its own parameters better than we do.
"""

from __future__ import annotations

from typing import Any

import orjson

from lockgate.dataplane.context import RequestContext
from lockgate.errors import InvalidJson, InvalidParameter, MissingParameter
from lockgate.operations import Operation

# The field that must be present for each operation, and what it must be.
_REQUIRED: dict[Operation, tuple[str, tuple[type, ...], str]] = {
    Operation.CHAT: ("messages", (list,), "a non-empty array of messages"),
    Operation.COMPLETIONS: ("prompt", (str, list), "a string or an array"),
    Operation.EMBEDDINGS: ("input", (str, list), "a string or an array"),
}


def parse_json_object(raw: bytes) -> dict[str, Any]:
    if not raw:
        raise InvalidJson("The request body is empty; send a JSON object.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidJson(f"The request body is not valid JSON ({exc}).") from None
    if not isinstance(body, dict):
        raise InvalidJson("The request body must be a JSON object.")
    return body


def read_inference_request(ctx: RequestContext) -> None:
    """Fill ``ctx`` from the body of a chat, completions or embeddings request."""
    body = parse_json_object(ctx.http.body)
    model = body.get("model")
    if model is None:
        raise MissingParameter("You must provide a model parameter.", param="model")
    if not isinstance(model, str) or not model:
        raise InvalidParameter("'model' must be a non-empty string.", param="model")
    field, types, shape = _REQUIRED[ctx.operation]
    value = body.get(field)
    if value is None:
        raise MissingParameter(f"Missing required parameter: '{field}'.", param=field)
    if not isinstance(value, types) or (field == "messages" and not value):
        raise InvalidParameter(f"'{field}' must be {shape}.", param=field)
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise InvalidParameter("'stream' must be a boolean.", param="stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise InvalidParameter("'stream_options' must be an object.", param="stream_options")
    is_stream = bool(stream) and ctx.operation.is_streamable
    if options is not None and not is_stream:
        raise InvalidParameter(
            "'stream_options' is only allowed when 'stream' is true.", param="stream_options"
        )
    ctx.body = body
    ctx.requested_model = model
    ctx.is_stream = is_stream
    ctx.wants_usage_chunk = bool(options and options.get("include_usage") is True)


def read_passthrough_request(ctx: RequestContext) -> None:
    """Passthrough bodies are opaque; a JSON body may still name the model."""
    content_type = ctx.http.headers.get(b"content-type", b"")
    if content_type.startswith(b"application/json") and ctx.http.body:
        body = parse_json_object(ctx.http.body)
        model = body.get("model")
        if isinstance(model, str):
            ctx.body = body
            ctx.requested_model = model
            ctx.is_stream = body.get("stream") is True


def models_list(names: list[str]) -> bytes:
    return orjson.dumps(
        {
            "object": "list",
            "data": [
                {"id": name, "object": "model", "created": 0, "owned_by": "lockgate"}
                for name in names
            ],
        }
    )
