"""OpenAI-compatible upstreams (vLLM, SGLang, TGI, llama.cpp, Ollama, OpenAI itself).

Why the care with bytes: a stream event that needs no change is forwarded as
the exact bytes the upstream sent; only events we must alter (public model
name, the usage chunk the client did not ask for) are re-serialised.
"""

from __future__ import annotations

from typing import Any

import orjson

from lockgate.config import DeploymentTarget
from lockgate.errors import UpstreamHttpError, UpstreamProtocolError
from lockgate.operations import Operation
from lockgate.usage import Usage

_RELAYED_ERROR_HEADERS = (b"retry-after", b"retry-after-ms", b"x-should-retry")
_TRACE_HEADERS = (b"traceparent", b"tracestate")


class RequestTemplate:
    """The parts of an upstream request that are the same for every call to a deployment."""

    __slots__ = ("deployment", "static_headers")

    def __init__(self, deployment: DeploymentTarget, host_header: bytes) -> None:
        self.deployment = deployment
        lines = [b"host: " + host_header, b"user-agent: lockgate"]
        if deployment.authorization is not None:
            lines.append(b"authorization: " + deployment.authorization)
        self.static_headers = b"\r\n".join(lines) + b"\r\n"

    def build(
        self,
        *,
        operation: Operation,
        client_path: str,
        body: dict[str, Any] | None,
        raw_body: bytes,
        is_stream: bool,
        request_id: str,
        client_headers: dict[bytes, bytes],
        trace_headers: bytes = b"",
    ) -> bytes:
        """Serialise the upstream request (head and body). ``body`` is modified in place.

        ``trace_headers`` are whole ``traceparent``/``tracestate`` lines (tracing on):
        they replace any the client sent that ``forward_headers`` would pass on.
        """
        dep = self.deployment
        if operation is Operation.PASSTHROUGH:
            payload = raw_body
            if body is not None and "model" in body:
                body["model"] = dep.upstream_model
                payload = orjson.dumps(body)
            content_type = client_headers.get(b"content-type", b"application/json")
        else:
            assert body is not None
            body["model"] = dep.upstream_model
            if is_stream and operation.is_streamable:
                # Always ask for usage so every stream is metered; stripped later if unasked.
                options = body.get("stream_options")
                if not isinstance(options, dict):
                    options = body["stream_options"] = {}
                options["include_usage"] = True
            payload = orjson.dumps(body)
            content_type = b"application/json"
        extra = b""
        if dep.forward_headers or dep.forward_header_prefixes:
            extra = b"".join(
                b"%s: %s\r\n" % (name, value)
                for name, value in client_headers.items()
                if name in dep.forward_headers or name.startswith(dep.forward_header_prefixes)
                if not (trace_headers and name in _TRACE_HEADERS)
            )
        if trace_headers:
            extra += trace_headers
        return (
            b"POST %s HTTP/1.1\r\n%scontent-type: %s\r\ncontent-length: %d\r\n"
            b"x-request-id: %s\r\n%s\r\n%s"
            % (
                dep.upstream_path(client_path).encode(),
                self.static_headers,
                content_type,
                len(payload),
                request_id.encode(),
                extra,
                payload,
            )
        )


def parse_json_response(body: bytes, public_model: str) -> tuple[bytes, Usage | None]:
    """Translate a non-streamed success body; returns client bytes and usage."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise UpstreamProtocolError(
            "upstream returned a success status with invalid JSON"
        ) from None
    if not isinstance(obj, dict):
        raise UpstreamProtocolError("upstream returned JSON that is not an object")
    raw_usage = obj.get("usage")
    usage = Usage.from_openai(raw_usage) if isinstance(raw_usage, dict) else None
    if "model" in obj and obj["model"] != public_model:
        obj["model"] = public_model
        body = orjson.dumps(obj)
    return body, usage


def upstream_error(
    status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> UpstreamHttpError:
    """Map an upstream error response to our error shape, keeping its meaning.

    An upstream 401/403 means *our* credentials for it are wrong: telling the
    client its key is invalid would be a lie, so it becomes a 502.
    """
    message = f"upstream returned HTTP {status}"
    error_type = "upstream_error"
    code = f"upstream_http_{status}"
    param = None
    try:
        obj: Any = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        obj = None
    err = obj.get("error") if isinstance(obj, dict) else None
    if isinstance(err, dict):
        if isinstance(err.get("message"), str) and err["message"]:
            message = err["message"]
        if isinstance(err.get("type"), str) and err["type"]:
            error_type = err["type"]
        if isinstance(err.get("code"), str) and err["code"]:
            code = err["code"]
        if isinstance(err.get("param"), str):
            param = err["param"]
    elif isinstance(err, str):
        message = err
    relayed = tuple((k, v) for k, v in headers if k in _RELAYED_ERROR_HEADERS)
    if status in (401, 403):
        status, code = 502, "upstream_auth_failed"
        message = f"the upstream rejected the gateway's credentials ({message})"
    elif status < 400:
        status = 502
    return UpstreamHttpError(
        message, status=status, error_type=error_type, code=code, param=param, headers=relayed
    )
