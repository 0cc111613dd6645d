"""Mid-stream failover: finish a broken chat stream on another deployment.

Once bytes reached the client, a failed stream cannot be retried: the client
would see the answer twice. It can be *continued*: engines such as vLLM accept
a conversation whose last message is a partial assistant answer and go on
writing it (``continue_final_message: true`` with ``add_generation_prompt:
false``). So when a stream breaks (cut, stalled past the idle timeout, garbage),
the relay asks this module for a continuation: the original request plus an
assistant message holding the text relayed so far, sent to a deployment whose
config says ``supports_continuation`` — another replica of the model first,
then the model's ``on_failure`` fallbacks. The relay splices the new stream
into the old one (same id, no second role chunk; see ``StreamTranslator``).

Offered only where it can work: chat completions, one choice (``n`` = 1),
``routing.streams.failover`` on, and some deployment of the plan able to
continue. Each resumption spends the model's retry budget and is bounded by
``routing.streams.max_failovers`` and the first attempt's total deadline.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from lockgate import clock
from lockgate.dataplane.context import RequestContext
from lockgate.dataplane.upstreams import Upstreams
from lockgate.http.client import Deadlines, UpstreamError, UpstreamResponse
from lockgate.operations import Operation
from lockgate.routing.member import Member, Outcome
from lockgate.routing.pool import RoutePlan

if TYPE_CHECKING:
    from lockgate.dataplane.pipeline.exchange import Exchange

log = logging.getLogger("lockgate.routing")

_ERROR_BODY_LIMIT = 64 * 1024


class Continuation:
    """The means to resume one request's stream; lives on ``ctx.continuation``."""

    __slots__ = ("_deadline", "_exchange", "_plan", "_tried", "_upstreams", "failovers_left")

    def __init__(
        self, upstreams: Upstreams, plan: RoutePlan, exchange: Exchange, deadline: float
    ) -> None:
        self._upstreams = upstreams
        self._plan = plan
        self._exchange = exchange
        self._deadline = deadline
        self._tried: list[Member] = [exchange.lease.member]
        self.failovers_left = plan.pool.spec.streams.max_failovers

    @classmethod
    def offer(
        cls, upstreams: Upstreams, ctx: RequestContext, plan: RoutePlan, exchange: Exchange
    ) -> Continuation | None:
        """A continuation for this stream, or None where none could work (costs two
        attribute reads per route step when no deployment supports continuation)."""
        if not any(step.pool.continuable for step in plan.steps):
            return None
        body = ctx.body
        if ctx.operation is not Operation.CHAT or body is None or (body.get("n") or 1) != 1:
            return None
        if plan.pool.spec.streams.max_failovers == 0:
            return None
        loop = asyncio.get_running_loop()
        sent = ctx.upstream_sent_at
        start = loop.time() if sent is None else clock.as_loop_time(sent, loop)
        return cls(upstreams, plan, exchange, start + exchange.lease.target.timeouts.total_s)

    async def resume(
        self, ctx: RequestContext, produced: str, deltas: int
    ) -> UpstreamResponse | None:
        """Send the continuation; the new stream's response (head in, status 2xx) or None.

        Ends the broken attempt's lease as a failure. On success the exchange holds
        the new lease and response, and ``ctx.deployment`` names the new deployment.
        ``produced``: the assistant text the client has received; ``deltas``: how many
        content deltas carried it (the token estimate for ``max_tokens``).
        """
        loop = asyncio.get_running_loop()
        exchange = self._exchange
        exchange.lease.end(Outcome.FAILURE, loop.time())
        if self.failovers_left <= 0 or ctx.body is None:
            return None
        self.failovers_left -= 1
        body = continuation_body(ctx.body, produced, deltas)
        for member in self._candidates(loop.time()):
            now = loop.time()
            if now >= self._deadline or not self._plan.budget.try_spend(now):
                return None
            self._tried.append(member)
            lease = member.lease()
            try:
                response = await self._send(ctx, member, body, self._deadline - now)
            except BaseException:
                lease.end(Outcome.NEUTRAL, loop.time())
                raise
            if response is None:
                lease.end(Outcome.FAILURE, loop.time())
                continue
            log.info(
                "request %s: stream from %s broke; continued on %s",
                ctx.request_id,
                exchange.lease.target.name,
                member.name,
            )
            exchange.resumed(response, lease)
            ctx.deployment = member.target
            return response
        return None

    def _candidates(self, now: float) -> list[Member]:
        """Deployments able to continue, in route order; within a step, least loaded first."""
        found: list[Member] = []
        for step in self._plan.steps:
            if step.fallback is not None and not step.fallback.on_failure:
                continue
            ready = [
                m
                for m in step.pool.members
                if m.target.supports_continuation
                and m not in self._tried
                and m.throttled_until <= now
                and m.admits(now)
            ]
            ready.sort(key=lambda m: m.outstanding)
            found.extend(ready)
        return found

    async def _send(
        self, ctx: RequestContext, member: Member, body: dict[str, Any], remaining_s: float
    ) -> UpstreamResponse | None:
        binding = self._upstreams.binding(member.target)
        data = binding.template.build(
            operation=ctx.operation,
            client_path=ctx.http.path,
            body=body,
            raw_body=b"",
            is_stream=True,
            request_id=ctx.request_id,
            client_headers=ctx.http.headers,
        )
        d = binding.deadlines
        deadlines = Deadlines(d.connect_s, d.first_byte_s, d.idle_s, min(d.total_s, remaining_s))
        try:
            response = await binding.origin.send(data, deadlines)
        except UpstreamError as exc:
            log.info("request %s: continuation on %s failed: %s", ctx.request_id, member.name, exc)
            return None
        if response.status < 300:
            return response
        try:
            await response.read_body(_ERROR_BODY_LIMIT)
        except UpstreamError:
            response.abort()
        except BaseException:
            response.abort()
            raise
        else:
            response.release()
        log.info(
            "request %s: continuation on %s answered HTTP %d",
            ctx.request_id,
            member.name,
            response.status,
        )
        return None


def continuation_body(body: dict[str, Any], produced: str, deltas: int) -> dict[str, Any]:
    """The original request, continuing the partial answer ``produced`` (vLLM's form).

    ``max_tokens`` / ``max_completion_tokens`` shrink by the deltas already sent (one
    token each, as engines stream), so the whole answer keeps the client's limit.
    """
    messages = list(body.get("messages") or ())
    messages.append({"role": "assistant", "content": produced})
    resumed = dict(body)
    resumed["messages"] = messages
    resumed["continue_final_message"] = True
    resumed["add_generation_prompt"] = False
    for name in ("max_tokens", "max_completion_tokens"):
        limit = body.get(name)
        if isinstance(limit, int) and not isinstance(limit, bool):
            resumed[name] = max(1, limit - deltas)
    return resumed
