"""Headers every data-plane response carries: request id, who served it, where time went."""

from __future__ import annotations

from lockgate.dataplane.context import RequestContext
from lockgate.errors import GatewayError
from lockgate.http.server import Connection


def _ms(seconds: float) -> bytes:
    return b"%.3f" % (seconds * 1000.0)


def server_timing(ctx: RequestContext, now: float) -> bytes:
    """``Server-Timing`` splitting gateway time from upstream time.

    ``upstream`` is from sending the request to the end of its body (or to its
    head for streams, whose header leaves before the body); ``gateway`` is the rest.
    """
    sent = ctx.upstream_sent_at
    if sent is None:
        return b"gateway;dur=" + _ms(now - ctx.started_at)
    upstream_end = ctx.upstream_done_at or ctx.upstream_first_byte_at or now
    ttfb = (ctx.upstream_first_byte_at or upstream_end) - sent
    upstream = upstream_end - sent
    return b"gateway;dur=%s, upstream;dur=%s, upstream-ttfb;dur=%s" % (
        _ms(now - ctx.started_at - upstream),
        _ms(upstream),
        _ms(ttfb),
    )


def success_headers(ctx: RequestContext, content_type: bytes, now: float) -> bytes:
    deployment = ctx.deployment
    model = ctx.model
    assert deployment is not None
    assert model is not None
    return (
        b"content-type: %s\r\nx-request-id: %s\r\nx-lockgate-model: %s\r\n"
        b"x-lockgate-deployment: %s\r\nserver-timing: %s\r\n%s%s"
        % (
            content_type,
            ctx.request_id.encode(),
            model.name.encode(),
            deployment.name.encode(),
            server_timing(ctx, now),
            ctx.limit_headers,
            model.response_headers,  # Deprecation/Sunset of a deprecated version, else b""
        )
    )


def send_error(
    conn: Connection, request_id: str, error: GatewayError, limit_headers: bytes = b""
) -> None:
    """The one way the data plane answers with an error (before any byte was sent).

    ``limit_headers`` are the caller's rate-limit lines, sent with every response
    once admission has run, refusals included.
    """
    conn.respond(error.status, error_headers(request_id, error) + limit_headers, error.body())


def error_headers(request_id: str, error: GatewayError) -> bytes:
    extra = b"".join(b"%s: %s\r\n" % pair for pair in error.headers)
    return (
        b"content-type: application/json\r\nx-request-id: %s\r\n"
        b"x-lockgate-error-source: %s\r\nx-lockgate-error-code: %s\r\n%s"
        % (request_id.encode(), error.source.value.encode(), error.code.encode(), extra)
    )
