"""Active health checks: one owned background task probes deployments on a timer.

Passive health only learns from traffic, so a replica that died while idle is
discovered by the first unlucky request, and one that came back is not seen
until its ejection ends. Probing fixes both for models that opt in
(``routing.health_check``). The HTTP call itself is injected (``Probe``): the
routing domain knows nothing of connections.

Lifecycle: ``start()`` inside the running loop, ``close()`` (or ``await stop()``)
at shutdown. All probing runs under one task and one ``TaskGroup``, so cancelling
that task stops every probe; nothing is fire-and-forget.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from lockgate.config import DeploymentTarget
from lockgate.routing.member import Member
from lockgate.routing.pool import Pool
from lockgate.routing.spec import HealthCheckSpec
from lockgate.routing.watcher import PoolWatcher

log = logging.getLogger("lockgate.routing")

# Answers True if the deployment is healthy; may raise (counted as unhealthy).
Probe = Callable[[DeploymentTarget, HealthCheckSpec], Awaitable[bool]]


class HealthChecker(PoolWatcher):
    def __init__(self, pools: Sequence[Pool], probe: Probe) -> None:
        super().__init__([p for p in pools if p.spec.health_check is not None])
        self._probe = probe

    async def _watch(self, pool: Pool) -> None:
        spec = pool.spec.health_check
        assert spec is not None
        while True:
            await asyncio.gather(*(self._check(m, spec) for m in pool.members))
            await asyncio.sleep(spec.interval_s)

    async def _check(self, member: Member, spec: HealthCheckSpec) -> None:
        try:
            async with asyncio.timeout(spec.timeout_s):
                is_ok = await self._probe(member.target, spec)
        except TimeoutError:
            is_ok = False
        except Exception:
            # A probe bug must not end all probing; the deployment just counts as down.
            log.exception("health check of %s crashed", member.name)
            is_ok = False
        was_up = member.is_up
        member.record_check(is_ok, spec.healthy_threshold, spec.unhealthy_threshold)
        if member.is_up != was_up:
            log.warning(
                "deployment %s of %s is %s (active health check)",
                member.name,
                member.target.model_name,
                "up" if member.is_up else "down",
            )
