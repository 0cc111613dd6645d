"""Stage 5 — forward: attempts, retries and fallbacks, until an upstream answers.

One plain loop over the route plan (the model, then its fallbacks) and, within
each model, over attempts: lease a deployment, send, wait for the head. A
success returns at once; a failure is classified (``routing.retry``) and
either ends the request or leads to another attempt — on another deployment
where one exists, after back-off, within the attempt cap, the overall
deadline and the model's retry budget.

Everything here happens before the first byte reaches the client: the relay
runs only after ``forward`` returned, so a stream that breaks later is never
retried (it is reported in-band instead).

Transport failures become gateway errors attributed to the upstream. An
upstream error status is read (bounded) and raised as ``UpstreamHttpError``
so the client gets its meaning, its ``Retry-After``, and our error shape.
"""

from __future__ import annotations

import asyncio
import math

from lockgate import clock
from lockgate.dataplane.context import RequestContext
from lockgate.dataplane.idempotency import IDEMPOTENCY_HEADER, IdempotencyStore, Replay
from lockgate.dataplane.pipeline.continuation import Continuation
from lockgate.dataplane.pipeline.exchange import Exchange
from lockgate.dataplane.pipeline.hedging import race
from lockgate.dataplane.upstreams import UpstreamBinding, Upstreams
from lockgate.errors import GatewayError, UpstreamFailure, UpstreamHttpError, UpstreamTimedOut
from lockgate.http.client import Deadlines, UpstreamError, UpstreamResponse, UpstreamTimeout
from lockgate.operations import Operation
from lockgate.providers.openai_compat import upstream_error
from lockgate.routing.errors import NoHealthyDeployment
from lockgate.routing.hedge import HedgePolicy
from lockgate.routing.member import Lease, Member, Outcome
from lockgate.routing.pool import Pool, RoutePlan
from lockgate.routing.retry import (
    DeploymentsThrottled,
    Failure,
    RetryBudget,
    backoff_s,
    classify,
    health_outcome,
    retry_after_s,
    throttle_s,
)
from lockgate.routing.spec import FallbackSpec, RetrySpec

_ERROR_BODY_LIMIT = 64 * 1024


class Forwarder:
    def __init__(
        self, upstreams: Upstreams, *, idempotency: IdempotencyStore | None = None
    ) -> None:
        self._upstreams = upstreams
        # Per model (by name), built on its first hedged request.
        self._hedges: dict[str, HedgePolicy] = {}
        self._idempotency = idempotency

    async def forward(self, ctx: RequestContext, plan: RoutePlan) -> Exchange | Replay:
        """Return the exchange whose head is in and whose status is a success.

        Sets ``ctx.model`` (a fallback, if one served) and ``ctx.deployment``. The
        caller owns the exchange and must leave its ``with`` block after relaying.
        Raises the last upstream error when every allowed attempt failed,
        ``NoHealthyDeployment`` when there was nothing to attempt, or
        ``DeploymentsThrottled`` when every deployment asked for a longer back-off
        than the gateway waits. A non-streamed request with an ``Idempotency-Key``
        that was answered before gets a ``Replay`` of that answer instead.
        """
        store = self._idempotency
        if store is None or ctx.is_stream:
            return await self._forward(ctx, plan)
        key = ctx.http.headers.get(IDEMPOTENCY_HEADER)
        if key is None:
            return await self._forward(ctx, plan)
        replay = await store.begin(ctx, key)
        if replay is not None:
            return replay
        try:
            return await self._forward(ctx, plan)
        except BaseException:
            store.abandon(ctx)
            raise

    async def _forward(self, ctx: RequestContext, plan: RoutePlan) -> Exchange:
        loop = asyncio.get_running_loop()
        budget = plan.budget
        budget.record_request(loop.time())
        path = ctx.http.path if ctx.operation is Operation.PASSTHROUGH else None
        error: GatewayError | None = None  # the last failed attempt's error
        last: Failure | None = None  # and what it allows
        unavailable: NoHealthyDeployment | DeploymentsThrottled | None = None
        needs_larger_context = False
        calls = 0
        deadline = 0.0  # the first attempt's total deadline bounds every later one
        for step in plan.steps:
            pool = step.pool
            if step.fallback is not None and (
                not pool.serves(path) or not _accepts(step.fallback, needs_larger_context)
            ):
                continue
            key = pool.key(ctx.http.headers, ctx.body) if pool.needs_key else None
            retries = pool.spec.retries
            hedge = None if ctx.is_stream or pool.spec.hedge is None else self._hedge(pool)
            tried: list[Member] = []
            for _ in range(retries.max_attempts):
                now = loop.time()
                again = last is Failure.AGAIN and bool(tried)
                lease = pool.choose(now, key, path=path, tried=tried, allow_same=again)
                if lease is None:
                    if not tried and unavailable is None:
                        unavailable = _no_healthy(pool, now, path)
                    break
                wait_s = _pace(lease, tried, now, calls, retries, last, deadline, budget)
                if wait_s == _FAIL_OVER:
                    if unavailable is None:
                        unavailable = _throttled(pool, lease.member, now)
                    break
                if wait_s == _GIVE_UP:
                    assert error is not None
                    raise error
                if wait_s > 0:
                    try:
                        await asyncio.sleep(wait_s)
                    except BaseException:
                        lease.end(Outcome.NEUTRAL, loop.time())
                        raise
                calls += 1
                ctx.model = pool.model
                try:
                    if hedge is None:
                        response = await self._attempt(ctx, pool, lease, deadline)
                    else:
                        response, lease = await race(
                            self._attempt, ctx, pool, lease, key, deadline, hedge, budget, tried
                        )
                except GatewayError as exc:
                    now = loop.time()
                    if not deadline:
                        sent = ctx.upstream_sent_at
                        start = now if sent is None else clock.as_loop_time(sent, loop)
                        deadline = start + lease.target.timeouts.total_s
                    error = exc
                    last = classify(exc, retries)
                    if last is Failure.FINAL:
                        raise
                    if last is Failure.CONTEXT_OVERFLOW:
                        needs_larger_context = True
                        break
                    tried.append(lease.member)
                    continue
                exchange = Exchange(ctx, response, lease, loop)
                if ctx.is_stream and pool.spec.streams.failover:
                    ctx.continuation = Continuation.offer(self._upstreams, ctx, plan, exchange)
                return exchange
        if error is not None:
            raise error
        assert unavailable is not None
        raise unavailable

    async def _attempt(
        self, ctx: RequestContext, pool: Pool, lease: Lease, deadline: float
    ) -> UpstreamResponse:
        """One attempt on ``lease``: send, wait for the head, check the status.

        Owns the lease until it returns: a failure ends it (and teaches health), as
        does cancellation (a hedge that lost); success hands it to the caller. Sets
        ``ctx.deployment`` and the upstream times for the attempt that answered.
        """
        loop = asyncio.get_running_loop()
        target = lease.target
        binding = self._upstreams.binding(target)
        # Tracing (off: None): the attempt's span, whose id the engine gets in traceparent.
        traced = None if ctx.trace is None else ctx.trace.begin_attempt(target, clock.now())
        data, deadlines = _request(
            ctx,
            binding,
            deadline - loop.time() if deadline else 0,
            traced.header if traced else b"",
        )
        # Set now (not only on success) so a client that leaves while we wait is settled
        # as having reached this upstream; a hedge race sets them again for the winner.
        ctx.upstream_sent_at = sent_at = clock.now()
        ctx.deployment = target
        ctx.upstream_first_byte_at = None
        try:
            try:
                response = await binding.origin.send(data, deadlines)
            except UpstreamTimeout as exc:
                raise UpstreamTimedOut(f"{target.name}: {exc}", phase=exc.phase) from None
            except UpstreamError as exc:
                raise UpstreamFailure(f"{target.name}: {exc}") from None
            if response.status >= 300:
                raise await _error_status(response)
        except GatewayError as exc:
            _learn(pool, lease, exc, loop.time())
            if traced is not None:
                traced.failed(clock.now(), exc)
            raise
        except BaseException:
            lease.end(Outcome.NEUTRAL, loop.time())
            if traced is not None:
                traced.cancelled(clock.now())
            raise
        if traced is not None:
            traced.answered(response.status)
        ctx.deployment = target
        ctx.upstream_sent_at = sent_at
        ctx.upstream_first_byte_at = response.first_byte_at
        if not ctx.is_stream and pool.spec.hedge is not None:
            self._hedge(pool).record(response.first_byte_at - sent_at)
        return response

    def _hedge(self, pool: Pool) -> HedgePolicy:
        policy = self._hedges.get(pool.model.name)
        if policy is None:
            assert pool.spec.hedge is not None
            policy = self._hedges[pool.model.name] = HedgePolicy(pool.spec.hedge)
        return policy


def _request(
    ctx: RequestContext, binding: UpstreamBinding, remaining_s: float, trace_headers: bytes
) -> tuple[bytes, Deadlines]:
    """The attempt's bytes and deadlines. ``remaining_s`` (> 0 on retries) is what is
    left of the first attempt's total deadline: retries never outlast it."""
    data = binding.template.build(
        operation=ctx.operation,
        client_path=ctx.http.path,
        body=ctx.body,
        raw_body=ctx.http.body,
        is_stream=ctx.is_stream,
        request_id=ctx.request_id,
        client_headers=ctx.http.headers,
        trace_headers=trace_headers,
    )
    deadlines = binding.deadlines
    if remaining_s and remaining_s < deadlines.total_s:
        deadlines = Deadlines(
            deadlines.connect_s, deadlines.first_byte_s, deadlines.idle_s, max(0.001, remaining_s)
        )
    return data, deadlines


async def _error_status(response: UpstreamResponse) -> UpstreamHttpError:
    """Read an error answer (bounded) into our error shape; the connection is done after."""
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
    return upstream_error(response.status, response.headers, body)


# What ``_pace`` says besides a number of seconds.
_FAIL_OVER = -1.0  # not on this model: let a fallback take it
_GIVE_UP = -2.0  # not at all: the last error is the answer


def _pace(
    lease: Lease,
    tried: list[Member],
    now: float,
    calls: int,
    retries: RetrySpec,
    last: Failure | None,
    deadline: float,
    budget: RetryBudget,
) -> float:
    """Whether (and after how long) an attempt on ``lease`` may go; ends the lease if not.

    A deployment that said Retry-After (or keeps answering 429) is only chosen when no
    other can be: its back-off is then waited out when it is at most
    ``max_retry_after_s`` and ends within the deadline, else the request fails over —
    first attempts included, so a throttling replica is never hammered. A retry also
    waits its back-off and spends the budget; the hop to a larger context window after
    an overflow is routing, not a retry: it spends no budget and waits for nothing.
    """
    member = lease.member
    throttled_s = member.throttled_until - now
    if not calls:
        if throttled_s <= 0:
            return 0.0
        if throttled_s > retries.max_retry_after_s or throttled_s >= lease.target.timeouts.total_s:
            lease.end(Outcome.NEUTRAL, now)
            return _FAIL_OVER
        return throttled_s
    is_free = last is Failure.CONTEXT_OVERFLOW
    wait_s = 0.0 if is_free else backoff_s(calls, retries)
    if throttled_s > 0:
        if throttled_s > retries.max_retry_after_s:
            lease.end(Outcome.NEUTRAL, now)
            return _FAIL_OVER
        wait_s = max(wait_s, throttled_s)
    elif last is Failure.ELSEWHERE and member not in tried:
        # A silent or refusing replica: another one is asked at once (it was not hit).
        wait_s = 0.0
    if now + wait_s >= deadline or not (is_free or budget.try_spend(now)):
        lease.end(Outcome.NEUTRAL, now)
        return _GIVE_UP
    return wait_s


def _accepts(fallback: FallbackSpec | None, needs_larger_context: bool) -> bool:
    """Whether a step may be tried: the model itself always; a fallback on its condition.
    After a context overflow only fallbacks marked for it qualify (any other would
    overflow too), for the rest of the request."""
    if fallback is None:
        return True
    return fallback.on_context_overflow if needs_larger_context else fallback.on_failure


def _learn(pool: Pool, lease: Lease, error: GatewayError, now: float) -> None:
    """End a failed attempt's lease. A 429/503 with Retry-After throttles the deployment
    for that long (for every request of this worker); a 429 without one for a back-off
    that doubles while it keeps answering 429 (a 503 without one is a failure, which
    ejection and the breaker deal with)."""
    if isinstance(error, UpstreamHttpError) and error.status in (429, 503):
        wait_s = retry_after_s(error)
        member = lease.member
        member.throttles += 1
        if wait_s is None and error.status == 429:
            wait_s = throttle_s(member.throttles, pool.spec.retries)
        if wait_s is not None:
            pool.throttle(member, wait_s, now)
    lease.end(health_outcome(error), now)


def _throttled(pool: Pool, member: Member, now: float) -> DeploymentsThrottled:
    back_in_s = max(1, math.ceil(member.throttled_until - now))
    return DeploymentsThrottled(
        f"Every deployment of '{pool.model.name}' asked the gateway to back off "
        f"(429/503 with Retry-After); retry in {back_in_s}s.",
        headers=((b"retry-after", b"%d" % back_in_s),),
    )


def _no_healthy(pool: Pool, now: float, path: str | None) -> NoHealthyDeployment:
    back_in_s = max(1, math.ceil(pool.back_at(now, path) - now))
    return NoHealthyDeployment(
        f"No deployment of '{pool.model.name}' is healthy right now (ejected after "
        f"failures, circuit open or failing health checks); retry in {back_in_s}s.",
        headers=((b"retry-after", b"%d" % back_in_s),),
    )
