"""One error shape for the admin API, the same as the data plane's."""

from __future__ import annotations

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from lockgate.errors import GatewayError
from lockgate.store.errors import Conflict, Invalid, NotFound, StoreError, StoreUnavailable


def error_response(
    status: int, error_type: str, code: str, message: str, param: str | None = None
) -> Response:
    body = {"error": {"message": message, "type": error_type, "code": code, "param": param}}
    source = "client" if status < 500 else "gateway"
    return Response(
        orjson.dumps(body),
        status_code=status,
        media_type="application/json",
        headers={"x-lockgate-error-code": code, "x-lockgate-error-source": source},
    )


class AdminNotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(GatewayError)
    async def _gateway(_: Request, exc: GatewayError) -> Response:
        response = error_response(exc.status, exc.type, exc.code, exc.message, exc.param)
        for name, value in exc.headers:
            response.headers[name.decode()] = value.decode()
        return response

    @app.exception_handler(StoreError)
    async def _store(_: Request, exc: StoreError) -> Response:
        if isinstance(exc, NotFound):
            return error_response(404, "invalid_request_error", "not_found", str(exc))
        if isinstance(exc, Conflict):
            return error_response(409, "invalid_request_error", "conflict", str(exc))
        if isinstance(exc, Invalid):
            return error_response(400, "invalid_request_error", "invalid_parameter", str(exc))
        if isinstance(exc, StoreUnavailable):
            return error_response(503, "server_error", "store_unavailable", str(exc))
        return error_response(500, "server_error", "store_error", "internal store error")

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return error_response(
            400, "invalid_request_error", "invalid_parameter", str(first["msg"]), param
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        code = "unknown_endpoint" if exc.status_code == 404 else "invalid_request"
        if exc.status_code == 405:
            code = "method_not_allowed"
        return error_response(exc.status_code, "invalid_request_error", code, str(exc.detail))

    @app.exception_handler(ValueError)
    async def _value(_: Request, exc: ValueError) -> Response:
        return error_response(400, "invalid_request_error", "invalid_parameter", str(exc))
