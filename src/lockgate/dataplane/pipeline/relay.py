"""Stage 6 — relay: move the upstream's answer to the client, reading usage on the way.

Streams are relayed as whole SSE events the moment they arrive; the client's
pace pushes back on the upstream (``Connection.write`` waits, the upstream
reader pauses). Once the first byte has left, a failure can no longer change
the status, so it is reported in-band as an SSE ``error`` event — never as a
stream that merely stops (silent truncation).
"""

from __future__ import annotations

from lockgate.dataplane.context import RequestContext
from lockgate.dataplane.response_headers import success_headers
from lockgate.errors import (
    GatewayError,
    UpstreamFailure,
    UpstreamStreamBroken,
    UpstreamTimedOut,
)
from lockgate.http.client import UpstreamError, UpstreamResponse, UpstreamTimeout
from lockgate.http.server import Connection
from lockgate.operations import Operation
from lockgate.providers.openai_compat import parse_json_response
from lockgate.providers.openai_stream import MalformedEvent, StreamTranslator

_DONE_EVENT = b"data: [DONE]\n\n"


def _as_gateway_error(exc: UpstreamError, deployment: str) -> GatewayError:
    if isinstance(exc, UpstreamTimeout):
        return UpstreamTimedOut(f"{deployment}: {exc}", phase=exc.phase)
    return UpstreamStreamBroken(f"{deployment}: {exc}")


async def relay(
    ctx: RequestContext, upstream: UpstreamResponse, conn: Connection, max_response_bytes: int
) -> None:
    """Write the whole response to the client. Always releases or aborts ``upstream``."""
    content_type = upstream.header(b"content-type") or b"application/json"
    if ctx.operation is Operation.PASSTHROUGH:
        await _relay_raw(ctx, upstream, conn, content_type)
    elif ctx.is_stream and content_type.startswith(b"text/event-stream"):
        await _relay_stream(ctx, upstream, conn, content_type)
    else:
        await _relay_whole(ctx, upstream, conn, content_type, max_response_bytes)


async def _relay_whole(
    ctx: RequestContext,
    upstream: UpstreamResponse,
    conn: Connection,
    content_type: bytes,
    limit: int,
) -> None:
    assert ctx.deployment is not None
    assert ctx.model is not None
    try:
        body = await upstream.read_body(limit)
    except UpstreamError as exc:
        upstream.abort()
        raise _as_gateway_error(exc, ctx.deployment.name) from None
    except BaseException:
        upstream.abort()
        raise
    upstream.release()
    now = conn.loop.time()
    ctx.upstream_done_at = now
    if content_type.startswith(b"application/json"):
        body, ctx.usage = parse_json_response(body, ctx.model.name)
    ctx.status = 200
    conn.respond(200, success_headers(ctx, content_type, now), body)


async def _relay_stream(
    ctx: RequestContext, upstream: UpstreamResponse, conn: Connection, content_type: bytes
) -> None:
    assert ctx.deployment is not None
    assert ctx.model is not None
    loop = conn.loop
    translator = StreamTranslator(ctx.model.name, strip_usage_chunk=not ctx.wants_usage_chunk)
    ctx.status = 200
    conn.start(200, success_headers(ctx, content_type, loop.time()))
    error: GatewayError | None = None
    final = b""
    try:
        while (chunk := await upstream.read_chunk()) is not None:
            events = translator.feed(chunk)
            if translator.is_done:
                # Hold the last events back so they leave with the stream's terminator.
                final = b"".join(events)
                break
            if events:
                if ctx.first_byte_to_client_at is None:
                    ctx.first_byte_to_client_at = loop.time()
                await conn.write(events[0] if len(events) == 1 else b"".join(events))
        if translator.is_done:
            conn.end(final)
            ctx.upstream_done_at = loop.time()
            await _reuse_or_close(upstream)
            return
        upstream.abort()
        if translator.has_finish_reason and not translator.has_partial_event:
            # Complete content without the [DONE] terminator: finish the stream properly.
            final = _DONE_EVENT
        elif translator.error is not None:
            pass  # the upstream's own error event has been relayed already
        else:
            error = UpstreamStreamBroken(
                f"{ctx.deployment.name}: upstream ended the stream before it was complete"
            )
    except UpstreamError as exc:
        upstream.abort()
        error = _as_gateway_error(exc, ctx.deployment.name)
    except MalformedEvent as exc:
        upstream.abort()
        error = exc
        final = exc.valid_before  # the good events that arrived with the bad one
    except GatewayError as exc:
        upstream.abort()
        error = exc
    except BaseException:
        upstream.abort()
        raise
    finally:
        ctx.usage = translator.usage
        if ctx.upstream_done_at is None:
            ctx.upstream_done_at = loop.time()
    if translator.error is not None and error is None:
        message = translator.error.get("message")
        ctx.error = UpstreamFailure(f"upstream stream error: {message}")
    if error is not None:
        ctx.error = error
        final += b"data: " + error.body() + b"\n\n"
    conn.end(final)


async def _reuse_or_close(upstream: UpstreamResponse) -> None:
    """After [DONE]: read the rest of the upstream body (normally there already), then pool it."""
    try:
        while await upstream.read_chunk() is not None:
            pass
    except UpstreamError:
        upstream.abort()
        return
    upstream.release()


async def _relay_raw(
    ctx: RequestContext, upstream: UpstreamResponse, conn: Connection, content_type: bytes
) -> None:
    """Passthrough: bytes as they come, no parsing."""
    assert ctx.deployment is not None
    loop = conn.loop
    ctx.status = upstream.status
    conn.start(upstream.status, success_headers(ctx, content_type, loop.time()))
    try:
        while (chunk := await upstream.read_chunk()) is not None:
            await conn.write(chunk)
    except UpstreamError as exc:
        upstream.abort()
        ctx.error = _as_gateway_error(exc, ctx.deployment.name)
        # A raw body has no in-band error channel: cut the connection so the client sees it.
        if conn.transport is not None:
            conn.transport.abort()
        return
    except BaseException:
        upstream.abort()
        raise
    upstream.release()
    ctx.upstream_done_at = loop.time()
    conn.end()
