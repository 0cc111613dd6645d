"""Stage 5 — forward: send the request to the chosen deployment, wait for its head.

Transport failures become gateway errors attributed to the upstream. An
upstream error status is read (bounded) and raised as ``UpstreamHttpError``
so the client gets its meaning, its ``Retry-After``, and our error shape.
"""

from __future__ import annotations

from lockgate.dataplane.context import RequestContext
from lockgate.dataplane.upstreams import Upstreams
from lockgate.errors import UpstreamFailure, UpstreamTimedOut
from lockgate.http.client import UpstreamError, UpstreamResponse, UpstreamTimeout
from lockgate.providers.openai_compat import upstream_error

_ERROR_BODY_LIMIT = 64 * 1024


class Forwarder:
    def __init__(self, upstreams: Upstreams) -> None:
        self._upstreams = upstreams

    async def forward(self, ctx: RequestContext) -> UpstreamResponse:
        """Return a response whose head is in and whose status is a success.

        The caller owns the returned response and must ``release()`` or ``abort()`` it.
        """
        deployment = ctx.deployment
        assert deployment is not None
        binding = self._upstreams.binding(deployment)
        data = binding.template.build(
            operation=ctx.operation,
            client_path=ctx.http.path,
            body=ctx.body,
            raw_body=ctx.http.body,
            is_stream=ctx.is_stream,
            request_id=ctx.request_id,
            client_headers=ctx.http.headers,
        )
        origin = binding.origin
        ctx.upstream_sent_at = origin.loop.time()
        try:
            response = await origin.send(data, binding.deadlines)
        except UpstreamTimeout as exc:
            raise UpstreamTimedOut(f"{deployment.name}: {exc}", phase=exc.phase) from None
        except UpstreamError as exc:
            raise UpstreamFailure(f"{deployment.name}: {exc}") from None
        ctx.upstream_first_byte_at = response.first_byte_at
        if response.status >= 300:
            try:
                body = await response.read_body(_ERROR_BODY_LIMIT)
            except UpstreamError:
                body = b""
                response.abort()
            except BaseException:
                response.abort()
                raise
            else:
                response.release()
            raise upstream_error(response.status, response.headers, body)
        return response
