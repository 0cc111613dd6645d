"""Stage 6 — relay: move the upstream's answer to the client, reading usage on the way.

Streams are relayed as whole SSE events the moment they arrive; the client's
pace pushes back on the upstream (``Connection.write`` waits, the upstream
reader pauses). Once the first byte has left, a failure can no longer change
the status, so it is reported in-band as an SSE ``error`` event — never as a
stream that merely stops (silent truncation).
"""

from __future__ import annotations

import asyncio
from functools import partial

from lockgate import clock
from lockgate.dataplane.context import RequestContext
from lockgate.dataplane.idempotency import StoredAnswer
from lockgate.dataplane.pipeline.continuation import Continuation
from lockgate.dataplane.response_headers import success_headers
from lockgate.errors import (
    GatewayError,
    UpstreamFailure,
    UpstreamProtocolError,
    UpstreamStreamBroken,
    UpstreamTimedOut,
)
from lockgate.http.client import UpstreamError, UpstreamResponse, UpstreamTimeout
from lockgate.http.server import Connection
from lockgate.operations import Operation
from lockgate.providers.openai_compat import parse_json_response
from lockgate.providers.openai_stream import MalformedEvent, StreamTranslator

_DONE_EVENT = b"data: [DONE]\n\n"
# How long a stream whose usage arrived may take to send its [DONE] before the
# connection is closed rather than pooled (the client has its whole answer already).
_DONE_GRACE_S = 1.0


def _as_gateway_error(exc: UpstreamError, deployment: str) -> GatewayError:
    if isinstance(exc, UpstreamTimeout):
        return UpstreamTimedOut(f"{deployment}: {exc}", phase=exc.phase)
    return UpstreamStreamBroken(f"{deployment}: {exc}")


async def relay(
    ctx: RequestContext,
    upstream: UpstreamResponse | StoredAnswer,
    conn: Connection,
    max_response_bytes: int,
    *,
    hold_end: bool = False,
) -> None:
    """Write the response to the client. Always releases or aborts ``upstream``.

    With ``hold_end``, everything but the response's end is written: its last bytes
    (a whole non-streamed response; a stream's last events and terminator) are left
    in ``ctx.held_end`` for the pipeline to send once the usage record is durable,
    so no client sees an answer complete whose record a crash could still lose.
    """
    if isinstance(upstream, StoredAnswer):
        _replay(ctx, upstream, conn)  # served before, metered before: nothing to hold
        return
    content_type = upstream.header(b"content-type") or b"application/json"
    end = _Ending(conn, ctx if hold_end else None)
    if ctx.operation is Operation.PASSTHROUGH:
        await _relay_raw(ctx, upstream, conn, content_type, end)
    elif ctx.is_stream and content_type.startswith(b"text/event-stream"):
        await _relay_stream(ctx, upstream, conn, content_type, end)
    else:
        await _relay_whole(ctx, upstream, conn, content_type, max_response_bytes, end)


class _Ending:
    """How a relay ends its response: at once, or held in ``ctx.held_end``."""

    __slots__ = ("_conn", "_holder")

    def __init__(self, conn: Connection, holder: RequestContext | None) -> None:
        self._conn = conn
        self._holder = holder

    def respond(self, status: int, headers: bytes, body: bytes) -> None:
        if self._holder is None:
            self._conn.respond(status, headers, body)
        else:
            self._holder.held_end = partial(self._conn.respond, status, headers, body)

    def end(self, data: bytes = b"") -> None:
        if self._holder is None:
            self._conn.end(data)
        else:
            self._holder.held_end = partial(self._conn.end, data)


async def _relay_whole(
    ctx: RequestContext,
    upstream: UpstreamResponse,
    conn: Connection,
    content_type: bytes,
    limit: int,
    end: _Ending,
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
    now = clock.now()
    ctx.upstream_done_at = now
    if content_type.startswith(b"application/json"):
        body, ctx.usage = parse_json_response(body, ctx.model.name)
    ctx.status = 200
    end.respond(200, success_headers(ctx, content_type, now), body)
    claim = ctx.idempotency
    if claim is not None:
        claim.keep(StoredAnswer(content_type, body, ctx.model.name, ctx.deployment.name))


def _replay(ctx: RequestContext, answer: StoredAnswer, conn: Connection) -> None:
    """An answer stored under the request's Idempotency-Key: no upstream, no usage."""
    ctx.status = 200
    headers = b"content-type: %s\r\nx-request-id: %s\r\nx-lockgate-model: %s\r\n" % (
        answer.content_type,
        ctx.request_id.encode(),
        answer.model.encode(),
    )
    headers += b"x-lockgate-deployment: %s\r\nidempotent-replayed: true\r\n%s" % (
        answer.deployment.encode(),
        ctx.limit_headers,
    )
    conn.respond(200, headers, answer.body)


async def _relay_stream(
    ctx: RequestContext,
    upstream: UpstreamResponse,
    conn: Connection,
    content_type: bytes,
    end: _Ending,
) -> None:
    """Relay events as they come. A stream that breaks is continued elsewhere where
    ``ctx.continuation`` allows, else ended with an in-band error event — never cut
    silently, never ended with a ``[DONE]`` it did not earn."""
    assert ctx.deployment is not None
    assert ctx.model is not None
    streams = ctx.model.routing.streams
    continuation = ctx.continuation
    translator = StreamTranslator(
        ctx.model.name,
        strip_usage_chunk=not ctx.wants_usage_chunk,
        skip_malformed=streams.on_malformed_event == "skip",
        track_text=continuation is not None,
    )
    ctx.status = 200
    conn.start(200, success_headers(ctx, content_type, clock.now()))
    try:
        while True:
            error, final = await _pump(ctx, upstream, conn, translator, end)
            if final is None:
                return  # complete, and the client's stream has been ended
            if error is None or not _is_resumable(error, translator, continuation):
                break
            assert continuation is not None
            if final:  # good events that came with the bad one go out first
                await conn.write(final)
            resumed = await continuation.resume(ctx, translator.text, translator.content_deltas)
            if resumed is None:
                final = b""
                break
            upstream = resumed
            translator.begin_continuation()
    finally:
        ctx.usage = translator.usage
        ctx.output_events = translator.output_events
        if ctx.upstream_done_at is None:
            ctx.upstream_done_at = clock.now()
    if translator.error is not None and error is None:
        message = translator.error.get("message")
        ctx.error = UpstreamFailure(f"upstream stream error: {message}")
    if error is not None:
        ctx.error = error
        final += b"data: " + error.body() + b"\n\n"
    end.end(final)


def _is_resumable(
    error: GatewayError, translator: StreamTranslator, continuation: Continuation | None
) -> bool:
    """A break the upstream caused (cut, stall, garbage), with text that can be carried
    over; a total deadline is the request's own limit, not a failure to route around."""
    if continuation is None or not translator.is_continuable:
        return False
    if isinstance(error, UpstreamTimedOut):
        return error.code == "upstream_idle_timeout"
    return isinstance(error, UpstreamStreamBroken | UpstreamProtocolError)


async def _pump(
    ctx: RequestContext,
    upstream: UpstreamResponse,
    conn: Connection,
    translator: StreamTranslator,
    end: _Ending,
) -> tuple[GatewayError | None, bytes | None]:
    """Relay one upstream's events until its stream ends. Returns the failure (None if it
    completed) and the bytes still to send — None when the stream was complete and the
    client's response has been ended here. Always releases or aborts ``upstream``."""
    assert ctx.deployment is not None
    final = b""
    try:
        while (chunk := await upstream.read_chunk()) is not None:
            events = translator.feed(chunk)
            if translator.is_done or translator.is_complete:
                # Hold the last events back so they leave with the stream's terminator.
                final = b"".join(events)
                break
            if events:
                if ctx.first_byte_to_client_at is None:
                    ctx.first_byte_to_client_at = clock.now()
                await conn.write(events[0] if len(events) == 1 else b"".join(events))
        if translator.is_done or translator.is_complete:
            ctx.upstream_done_at = clock.now()
            if not translator.is_done:
                final += _DONE_EVENT  # usage is in: the answer is whole, only [DONE] is late
            end.end(final)
            await _reuse_or_close(upstream, wait_s=0.0 if translator.is_done else _DONE_GRACE_S)
            return None, None
        upstream.abort()
        if translator.has_finish_reason and not translator.has_partial_event:
            # Complete content without the [DONE] terminator: finish the stream properly.
            return None, _DONE_EVENT
        if translator.error is not None:
            return None, b""  # the upstream's own error event has been relayed already
        return UpstreamStreamBroken(
            f"{ctx.deployment.name}: upstream ended the stream before it was complete"
        ), b""
    except UpstreamError as exc:
        upstream.abort()
        return _as_gateway_error(exc, ctx.deployment.name), b""
    except MalformedEvent as exc:
        upstream.abort()
        return exc, exc.valid_before  # the good events that arrived with the bad one
    except GatewayError as exc:
        upstream.abort()
        return exc, b""
    except BaseException:
        upstream.abort()
        raise


async def _reuse_or_close(upstream: UpstreamResponse, wait_s: float = 0.0) -> None:
    """After the stream's end: read the rest of the upstream body (normally there already),
    then pool the connection. ``wait_s`` > 0 bounds the wait for a late ``[DONE]``; past it
    the connection is closed instead (the client's stream has ended already)."""
    try:
        if wait_s > 0:
            async with asyncio.timeout(wait_s):
                while await upstream.read_chunk() is not None:
                    pass
        else:
            while await upstream.read_chunk() is not None:
                pass
    except (UpstreamError, TimeoutError):
        upstream.abort()
        return
    except BaseException:
        upstream.abort()
        raise
    upstream.release()


async def _relay_raw(
    ctx: RequestContext,
    upstream: UpstreamResponse,
    conn: Connection,
    content_type: bytes,
    end: _Ending,
) -> None:
    """Passthrough: bytes as they come, no parsing."""
    assert ctx.deployment is not None
    ctx.status = upstream.status
    conn.start(upstream.status, success_headers(ctx, content_type, clock.now()))
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
    ctx.upstream_done_at = clock.now()
    end.end()
