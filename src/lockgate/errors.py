"""The one error tree: every failure a client can see is a ``GatewayError``.

Each error carries its HTTP status, OpenAI ``type``, a stable ``code`` that
clients and dashboards may key on, and its ``source``: who is to blame
(the client, the gateway, or the upstream). The HTTP edge renders all of them
the same way; nothing else writes error bodies.
"""

from __future__ import annotations

from enum import StrEnum

import orjson


class ErrorSource(StrEnum):
    CLIENT = "client"
    GATEWAY = "gateway"
    UPSTREAM = "upstream"


class GatewayError(Exception):
    status: int = 500
    type: str = "server_error"
    code: str = "internal_error"
    source: ErrorSource = ErrorSource.GATEWAY

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        headers: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers = headers

    def body(self) -> bytes:
        return orjson.dumps(
            {
                "error": {
                    "message": self.message,
                    "type": self.type,
                    "code": self.code,
                    "param": self.param,
                }
            }
        )


# -- client errors -------------------------------------------------------------
class ClientError(GatewayError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"
    source = ErrorSource.CLIENT


class InvalidJson(ClientError):
    code = "invalid_json"


class InvalidParameter(ClientError):
    code = "invalid_parameter"


class MissingParameter(ClientError):
    code = "missing_required_parameter"


class ModelNotFound(ClientError):
    status = 404
    code = "model_not_found"


class EndpointNotFound(ClientError):
    status = 404
    code = "unknown_endpoint"


class MethodNotAllowed(ClientError):
    status = 405
    code = "method_not_allowed"


class RequestTooLarge(ClientError):
    status = 413
    code = "request_too_large"


class AuthenticationFailed(ClientError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(ClientError):
    status = 403
    type = "permission_error"
    code = "permission_denied"


# -- gateway errors ------------------------------------------------------------


class NoDeploymentAvailable(GatewayError):
    status = 503
    code = "no_deployment_available"


# -- upstream errors -----------------------------------------------------------
class UpstreamFailure(GatewayError):
    status = 502
    type = "upstream_error"
    code = "upstream_unavailable"
    source = ErrorSource.UPSTREAM


class UpstreamTimedOut(UpstreamFailure):
    """Timeouts are the upstream's fault, never a client-side 408 (see PEERS.md #11)."""

    status = 504
    code = "upstream_timeout"

    def __init__(self, message: str, *, phase: str) -> None:
        super().__init__(message)
        self.code = f"upstream_{phase}_timeout"


class UpstreamProtocolError(UpstreamFailure):
    code = "upstream_bad_response"


class UpstreamStreamBroken(UpstreamFailure):
    code = "upstream_stream_incomplete"


class UpstreamHttpError(UpstreamFailure):
    """The upstream answered with an error status; passed through with attribution."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        error_type: str,
        code: str,
        param: str | None,
        headers: tuple[tuple[bytes, bytes], ...],
    ) -> None:
        super().__init__(message, param=param, headers=headers)
        self.status = status
        self.type = error_type
        self.code = code
