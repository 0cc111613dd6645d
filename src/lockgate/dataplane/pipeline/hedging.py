"""Hedged attempts: race a slow non-streamed attempt against copies on other deployments.

``race`` is what the forward stage calls instead of a single attempt when the
model has ``routing.hedge``. The first attempt starts at once; each time the
hedge delay passes without an answer, one more copy goes to another
deployment (at most ``max_extra``, each spending the retry budget, none to a
deployment that asked for a back-off). The first success wins. Every other
attempt is cancelled: its task's cancellation aborts its upstream connection
(the engine stops generating) and ends its lease as neutral — an attempt cut
short says nothing about its deployment's health. Nothing of a loser reaches
the client or the usage record: the relay reads only the winner's answer.

A failure while another attempt still runs is learned and forgotten (the
other may still win); only when every attempt failed does ``race`` raise, the
last error, for the forward loop to classify like any failed attempt.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from lockgate.dataplane.context import RequestContext
from lockgate.http.client import UpstreamResponse
from lockgate.routing.hedge import HedgePolicy
from lockgate.routing.member import Lease, Member, Outcome
from lockgate.routing.pool import Pool
from lockgate.routing.retry import RetryBudget

Attempt = Callable[[RequestContext, Pool, Lease, float], Coroutine[Any, Any, UpstreamResponse]]


async def race(
    attempt: Attempt,
    ctx: RequestContext,
    pool: Pool,
    first: Lease,
    key: bytes | None,
    deadline: float,
    hedge: HedgePolicy,
    budget: RetryBudget,
    tried: list[Member],
) -> tuple[UpstreamResponse, Lease]:
    """The first successful response among ``first`` and its hedges, with its lease.

    ``attempt`` owns each lease while it runs (ends it on failure or cancellation).
    Members of hedges that failed are appended to ``tried``; on total failure the
    last error is raised and the caller treats ``first`` as the failed attempt.
    """
    loop = asyncio.get_running_loop()
    delay_s = hedge.delay_s()
    running: dict[asyncio.Task[UpstreamResponse], Lease] = {
        loop.create_task(attempt(ctx, pool, first, deadline)): first
    }
    extra = 0
    may_hedge = delay_s is not None
    error: BaseException | None = None
    try:
        while running:
            timeout = delay_s if may_hedge and extra < hedge.max_extra else None
            done, _ = await asyncio.wait(
                running, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                lease = _hedge_lease(pool, key, running.values(), tried, budget, loop.time())
                if lease is None:
                    may_hedge = False
                    continue
                extra += 1
                running[loop.create_task(attempt(ctx, pool, lease, deadline))] = lease
                continue
            for task in done:
                lease = running.pop(task)
                failure = task.exception()
                if failure is None:
                    winner = task.result()
                    # ``attempt`` set the ctx times for whichever finished last; the winner's count.
                    ctx.deployment = lease.target
                    ctx.upstream_first_byte_at = winner.first_byte_at
                    return winner, lease
                error = failure
                if lease is not first:
                    tried.append(lease.member)
    finally:
        await _cancel(running)
    assert error is not None
    raise error


def _hedge_lease(
    pool: Pool,
    key: bytes | None,
    busy: Iterable[Lease],
    tried: list[Member],
    budget: RetryBudget,
    now: float,
) -> Lease | None:
    """A lease on a deployment not in the race, not throttled, if the budget allows one."""
    taken = [lease.member for lease in busy]
    lease = pool.choose(now, key, tried=[*tried, *taken])
    if lease is None:
        return None
    if lease.member.throttled_until > now or not budget.try_spend(now):
        lease.end(Outcome.NEUTRAL, now)
        return None
    return lease


async def _cancel(running: dict[asyncio.Task[UpstreamResponse], Lease]) -> None:
    """Cancel the attempts still running and wait until each has aborted its connection."""
    for task in running:
        task.cancel()
    for task in running:
        try:
            response = await task
        except BaseException:  # noqa: S112 - cancelled or failed: ``attempt`` ended its lease
            continue
        # It answered while being cancelled: the answer is not used.
        response.abort()
        running[task].end(Outcome.NEUTRAL, asyncio.get_running_loop().time())
