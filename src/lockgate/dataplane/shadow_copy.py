"""Sending a shadow copy: build it like the client's request, read the whole answer.

Used by ``dataplane.lifecycle`` for rollouts' shadow traffic. The copy goes
through connection pools of its own (``ShadowCopier`` owns an ``Upstreams``), so
copies never take, or wait for, a connection a client's request could use.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from lockgate.dataplane.context import RequestContext
from lockgate.dataplane.upstreams import Upstreams
from lockgate.http.client import UpstreamError, UpstreamResponse
from lockgate.providers.openai_stream import StreamTranslator
from lockgate.routing.member import Outcome
from lockgate.routing.pool import RoutePlan
from lockgate.routing.shadow import ShadowAnswer

_SHADOW_BODY_LIMIT = 16 * 1024 * 1024


class ShadowCopier:
    def __init__(self, upstreams: Upstreams) -> None:
        self._upstreams = upstreams

    def close(self) -> None:
        self._upstreams.close()

    async def send(
        self, ctx: RequestContext, plan: RoutePlan, body: dict[str, Any] | None
    ) -> ShadowAnswer:
        """Send the copy to a deployment of ``plan``'s pool; what it answered."""
        loop = asyncio.get_running_loop()
        upstreams = self._upstreams
        pool = plan.pool
        key = pool.key(ctx.http.headers, body) if pool.needs_key else None
        lease = pool.choose(loop.time(), key)
        if lease is None:
            return ShadowAnswer(503, 0.0, error="no healthy deployment")
        binding = upstreams.binding(lease.target)
        started = loop.time()
        try:
            data = binding.template.build(
                operation=ctx.operation,
                client_path=ctx.http.path,
                body=body,
                raw_body=ctx.http.body,
                is_stream=ctx.is_stream,
                request_id=ctx.request_id + "-shadow",
                client_headers={},
            )
            response = await binding.origin.send(data, binding.deadlines)
            try:
                answer = await _read_answer(response, ctx.is_stream)
            except BaseException:
                response.abort()
                raise
            answer.latency_ms = (loop.time() - started) * 1000
            return answer
        except UpstreamError as exc:
            return ShadowAnswer(0, (loop.time() - started) * 1000, error=str(exc))
        finally:
            # The copy is load on the candidate, but no verdict on its health: the
            # rollback monitor judges the candidate from real traffic only.
            lease.end(Outcome.NEUTRAL, loop.time())


async def _read_answer(response: UpstreamResponse, is_stream: bool) -> ShadowAnswer:
    """Status, tokens and text of an answer (streamed or whole); the connection is done."""
    if is_stream and (response.header(b"content-type") or b"").startswith(b"text/event-stream"):
        translator = StreamTranslator("shadow", strip_usage_chunk=False, track_text=True)
        while (chunk := await response.read_chunk()) is not None:
            translator.feed(chunk)
        response.release()
        usage = translator.usage
        return ShadowAnswer(
            response.status,
            0.0,
            usage.prompt_tokens if usage else None,
            usage.completion_tokens if usage else None,
            translator.text,
        )
    body = await response.read_body(_SHADOW_BODY_LIMIT)
    response.release()
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ShadowAnswer(response.status, 0.0, error="not JSON")
    usage = parsed.get("usage") if isinstance(parsed, dict) else None
    text = _answer_text(parsed)
    return ShadowAnswer(
        response.status,
        0.0,
        usage.get("prompt_tokens") if isinstance(usage, dict) else None,
        usage.get("completion_tokens") if isinstance(usage, dict) else None,
        text,
    )


def _answer_text(parsed: Any) -> str | None:
    try:
        choice = parsed["choices"][0]
    except (KeyError, IndexError, TypeError):
        return None
    message = choice.get("message") if isinstance(choice, dict) else None
    if isinstance(message, dict) and isinstance(message.get("content"), str):
        return str(message["content"])
    text = choice.get("text") if isinstance(choice, dict) else None
    return text if isinstance(text, str) else None
