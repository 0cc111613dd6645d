"""Circuit breakers shared across replicas: one replica's open is every replica's.

A breaker opens on a deployment's failure rate as one worker sees it. In scale-out
every worker of every replica would otherwise have to learn the same outage from
its own failed requests — N replicas pay N windows of errors. So when a breaker
opens on its own failures, ``BreakerSharing`` announces it on the invalidation bus
(``TOPIC_BREAKERS``; Redis or PostgreSQL in scale-out, a local file for the
workers of one machine), and every other process opens that deployment's breaker
until the same moment. Each then probes the deployment itself (half-open), so a
deployment that recovers is closed by each replica's own evidence, and a closed
state is never imposed from elsewhere.

The message carries the end of the open period as wall-clock time (replicas do
not share a monotonic clock); clock skew between replicas shifts it by the skew.
A breaker opened by a message is not announced again, so messages do not echo.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from lockgate.invalidation.bus import InvalidationBus
from lockgate.routing.member import Member
from lockgate.routing.pool import Pool

log = logging.getLogger(__name__)

TOPIC_BREAKERS = "routing.breakers"
_SEPARATOR = "|"  # model and deployment names cannot contain it (config name pattern)


class BreakerSharing:
    """Announces this process's breaker opens and applies other processes'.

    ``pool_of`` finds a model's (or ``name@version``'s) pool; ``clock`` is the
    event loop's, which breakers use. Call ``attach`` for each pool once the bus
    is subscribed, and ``close`` before the bus closes.
    """

    def __init__(
        self,
        bus: InvalidationBus,
        pool_of: Callable[[str], Pool | None],
        clock: Callable[[], float],
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._bus = bus
        self._pool_of = pool_of
        self._clock = clock
        self._wall = wall_clock
        self._publishing: set[asyncio.Task[None]] = set()
        self.announced = 0  # opens told to other processes
        self.applied = 0  # opens other processes told us of, applied here
        bus.subscribe(TOPIC_BREAKERS, self._received)

    def attach(self, pool: Pool) -> None:
        pool.on_breaker_open = self._opened

    def _opened(self, pool: Pool, member: Member) -> None:
        breaker = member.breaker
        if breaker is None:
            return
        until = self._wall() + max(0.0, breaker.opened_until - self._clock())
        key = _SEPARATOR.join((pool.model.name, member.name, f"{until:.3f}"))
        task = asyncio.get_running_loop().create_task(self._publish(key))
        self._publishing.add(task)
        task.add_done_callback(self._publishing.discard)

    async def _publish(self, key: str) -> None:
        try:
            await self._bus.publish(TOPIC_BREAKERS, key)
            self.announced += 1
        except Exception as exc:  # InvalidationUnavailable: the others learn it themselves
            log.warning("could not share a circuit breaker opening: %s", exc)

    def _received(self, key: str) -> None:
        try:
            model, deployment, until_text = key.rsplit(_SEPARATOR, 2)
            open_s = float(until_text) - self._wall()
        except ValueError:
            log.warning("ignoring a malformed circuit breaker message %r", key)
            return
        if open_s <= 0:
            return
        pool = self._pool_of(model)
        if pool is None:
            return
        for member in pool.members:
            if member.name == deployment and member.open_breaker(self._clock(), open_s):
                self.applied += 1

    async def close(self) -> None:
        """Wait for announcements under way (each is bounded by the bus's timeout)."""
        if self._publishing:
            await asyncio.gather(*self._publishing, return_exceptions=True)
