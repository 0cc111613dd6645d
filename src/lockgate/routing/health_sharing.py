"""Deployment health shared across processes: one worker's evidence is every worker's.

A breaker opens, an outlier is ejected, and an upstream's Retry-After throttles a
deployment on what one worker saw. In scale-out every worker of every replica would
otherwise have to learn the same outage from its own failed requests: N processes
pay N rounds of errors. So ``HealthSharing`` announces each of these on the
invalidation bus (``TOPIC_HEALTH``; Redis or PostgreSQL in scale-out, a local file
for the workers of one machine), and every other process applies it until the same
moment:

* ``breaker``: the deployment's breaker opens there too; each process then probes
  it itself (half-open), so recovery is every process's own evidence, and a closed
  state is never imposed from elsewhere;
* ``eject``: the deployment is ejected there too, on probation afterwards (the
  first failure that process sees ejects it again);
* ``throttle``: the deployment is second choice there too until the Retry-After
  has passed. Announced only when it moves the known end by a second or more, so
  an upstream answering 429 to every request does not become a message per request.

The message, ``kind|model|deployment|until``, carries the end as wall-clock time
(replicas share no monotonic clock), so clock skew between replicas shifts it by
the skew. What a message applied is not announced again, so messages do not echo.
A message without the kind (``model|deployment|until``) is a breaker opening, as
replicas before ejections and throttles were shared sent it.
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

# The channel's name predates ejections and throttles: kept, so that replicas of
# either version still hear each other's breaker openings during a rolling upgrade.
TOPIC_HEALTH = "routing.breakers"
_SEPARATOR = "|"  # model and deployment names cannot contain it (config name pattern)
_BREAKER, _EJECT, _THROTTLE = "breaker", "eject", "throttle"
_THROTTLE_STEP_S = 1.0  # a throttle is announced again only when it moves this much


class HealthSharing:
    """Announces this process's breaker openings, ejections and throttles; applies
    other processes'.

    ``pool_of`` finds a model's (or ``name@version``'s) pool; ``clock`` is the event
    loop's, which health state uses. Call ``attach`` for each pool once the bus is
    subscribed, and ``close`` before the bus closes.
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
        # (model, deployment) -> the throttle end (wall clock) last announced.
        self._throttles_told: dict[tuple[str, str], float] = {}
        self.announced = 0  # events told to other processes
        self.applied = 0  # events other processes told us of, applied here
        bus.subscribe(TOPIC_HEALTH, self._received)

    def attach(self, pool: Pool) -> None:
        pool.on_breaker_open = self._breaker_opened
        pool.on_ejected = self._ejected
        pool.on_throttled = self._throttled

    # -- this process's evidence -------------------------------------------------------
    def _breaker_opened(self, pool: Pool, member: Member) -> None:
        breaker = member.breaker
        if breaker is not None:
            self._announce(_BREAKER, pool, member, breaker.opened_until)

    def _ejected(self, pool: Pool, member: Member) -> None:
        self._announce(_EJECT, pool, member, member.outlier.ejected_until)

    def _throttled(self, pool: Pool, member: Member) -> None:
        until = self._as_wall(member.throttled_until)
        key = (pool.model.name, member.name)
        if until < self._throttles_told.get(key, 0.0) + _THROTTLE_STEP_S:
            return
        if len(self._throttles_told) > 10_000:  # bounded: deployments come and go
            self._throttles_told.clear()
        self._throttles_told[key] = until
        self._publish_soon(_THROTTLE, pool, member, until)

    def _announce(self, kind: str, pool: Pool, member: Member, until_loop: float) -> None:
        self._publish_soon(kind, pool, member, self._as_wall(until_loop))

    def _as_wall(self, loop_time: float) -> float:
        return self._wall() + max(0.0, loop_time - self._clock())

    def _publish_soon(self, kind: str, pool: Pool, member: Member, until: float) -> None:
        key = _SEPARATOR.join((kind, pool.model.name, member.name, f"{until:.3f}"))
        task = asyncio.get_running_loop().create_task(self._publish(key))
        self._publishing.add(task)
        task.add_done_callback(self._publishing.discard)

    async def _publish(self, key: str) -> None:
        try:
            await self._bus.publish(TOPIC_HEALTH, key)
            self.announced += 1
        except Exception as exc:  # InvalidationUnavailable: the others learn it themselves
            log.warning("could not share a deployment's health: %s", exc)

    # -- other processes' evidence -----------------------------------------------------
    def _received(self, key: str) -> None:
        parts = key.split(_SEPARATOR)
        if len(parts) == 3:
            parts.insert(0, _BREAKER)  # the format before ejections and throttles
        try:
            kind, model, deployment, until_text = parts
            remaining_s = float(until_text) - self._wall()
        except ValueError:
            log.warning("ignoring a malformed deployment health message %r", key)
            return
        if remaining_s <= 0:
            return
        pool = self._pool_of(model)
        if pool is None:
            return
        now = self._clock()
        for member in pool.members:
            if member.name != deployment:
                continue
            if kind == _BREAKER:
                applied = member.open_breaker(now, remaining_s)
            elif kind == _EJECT:
                applied = member.eject_for(now, remaining_s)
            elif kind == _THROTTLE:
                applied = member.throttled_until < now + remaining_s
                pool.throttle(member, remaining_s, now, is_own=False)
            else:
                log.warning("ignoring a deployment health message of kind %r", kind)
                return
            self.applied += applied

    async def close(self) -> None:
        """Wait for announcements under way (each is bounded by the bus's timeout)."""
        if self._publishing:
            await asyncio.gather(*self._publishing, return_exceptions=True)
