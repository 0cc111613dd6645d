"""The request pipeline: authenticate → authorise → admit → route → forward → relay → settle.

``run`` is the first function a newcomer should read: it is the whole order of
events for one request, and the only place errors turn into responses.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from lockgate import clock
from lockgate.dataplane.context import RequestContext
from lockgate.dataplane.pipeline.admit import Admitter
from lockgate.dataplane.pipeline.authenticate import Authenticator
from lockgate.dataplane.pipeline.authorize import Authorizer
from lockgate.dataplane.pipeline.forward import Forwarder
from lockgate.dataplane.pipeline.relay import relay
from lockgate.dataplane.pipeline.route import Router
from lockgate.dataplane.pipeline.settle import Settler
from lockgate.dataplane.response_headers import send_error
from lockgate.errors import GatewayError
from lockgate.http.server import ClientDisconnected, Connection


@dataclass(frozen=True, slots=True)
class Stages:
    authenticator: Authenticator
    authorizer: Authorizer
    admitter: Admitter
    router: Router
    forwarder: Forwarder
    settler: Settler
    max_response_bytes: int
    # Awaited before a response's end is sent: returns once every record settled so far
    # is durable (the usage journal's ``sync``). None: responses end at once.
    acknowledge: Callable[[], Awaitable[None]] | None = None


async def run(
    stages: Stages,
    ctx: RequestContext,
    conn: Connection,
    read_body: Callable[[RequestContext], None],
) -> None:
    """Serve one request end to end; settles exactly once.

    ``read_body`` is the HTTP edge's parser for this endpoint. It runs after
    authentication, so anonymous traffic costs no JSON parsing and learns
    nothing about what the gateway serves.
    """
    try:
        ctx.principal = await stages.authenticator.authenticate(ctx)
        ctx.authenticated_at = clock.now()
        read_body(ctx)
        ctx.model = stages.router.resolve(ctx)
        stages.authorizer.authorize(ctx)
        ctx.admit_started_at = clock.now()
        ticket = await stages.admitter.admit(ctx)
        ctx.admitted_at = clock.now()
        try:
            # Route, then forward: attempts, retries and fallbacks all happen before the
            # first byte reaches the client; the deployment's lease ends with the relay.
            plan = stages.router.plan(ctx)
            with await stages.forwarder.forward(ctx, plan) as upstream:
                await relay(
                    ctx,
                    upstream,
                    conn,
                    stages.max_response_bytes,
                    hold_end=stages.acknowledge is not None,
                )
        finally:
            ticket.release(ctx)
    except GatewayError as error:
        ctx.error = error
        ctx.status = error.status
        if not conn.is_response_started and not conn.is_closed:
            send_error(conn, ctx.request_id, error, ctx.limit_headers)
    except (asyncio.CancelledError, ClientDisconnected):
        ctx.is_client_disconnected = True
        raise
    finally:
        ctx.finished_at = clock.now()
        stages.settler.settle(ctx)
    held_end = ctx.held_end
    if held_end is not None and stages.acknowledge is not None:
        # Settled above: once its record is durable, the client may see the answer end.
        await stages.acknowledge()
        if not conn.is_closed:
            held_end()
