"""The exchange ``forward`` hands to ``relay``: the winning upstream response and the
lease on its deployment, ended exactly once when the relay is done."""

from __future__ import annotations

import asyncio
from types import TracebackType

from lockgate.dataplane.context import RequestContext
from lockgate.errors import GatewayError, UpstreamFailure
from lockgate.http.client import UpstreamResponse
from lockgate.routing.member import Lease, Outcome


class Exchange:
    """The upstream response that won, and the lease on the deployment that sent it.

    Used as ``with exchange as response: relay(...)``: leaving the block ends the
    lease exactly once, with what the relay saw, so the deployment's outstanding
    count, health and latency learn how the request went. Never swallows errors.
    """

    __slots__ = ("_ctx", "_loop", "is_resumed", "lease", "response")

    def __init__(
        self,
        ctx: RequestContext,
        response: UpstreamResponse,
        lease: Lease,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._ctx = ctx
        self.response = response
        self.lease = lease
        self._loop = loop
        self.is_resumed = False

    def resumed(self, response: UpstreamResponse, lease: Lease) -> None:
        """A broken stream goes on on another deployment (``Continuation``): the new
        lease is the one this exchange ends; the old one has been ended already."""
        self.response = response
        self.lease = lease
        self.is_resumed = True

    def __enter__(self) -> UpstreamResponse:
        return self.response

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        ctx = self._ctx
        error = exc if exc is not None else ctx.error
        if error is None:
            outcome = Outcome.SUCCESS
        elif isinstance(error, UpstreamFailure):
            outcome = Outcome.FAILURE  # broke, stalled or garbled after the head
        elif isinstance(error, GatewayError):
            outcome = Outcome.SUCCESS  # the upstream did its part
        else:
            outcome = Outcome.NEUTRAL  # the client left: no verdict on the upstream
        if ctx.idempotency is not None:
            ctx.idempotency.settle(ctx)  # stores a completed answer, frees the key otherwise
        ttft_s = None
        sent = ctx.upstream_sent_at
        first = (ctx.first_byte_to_client_at if ctx.is_stream else None) or (
            ctx.upstream_first_byte_at
        )
        if sent is not None and first and not self.is_resumed:
            ttft_s = first - sent
        self.lease.end(outcome, self._loop.time(), ttft_s)
