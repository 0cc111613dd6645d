"""Model lifecycle in a worker: runtime deployments, live rollouts, rollback, shadow copies.

Built by ``Services`` (it needs the store and the bus) and attached to the
data plane's router (``attach``). From then on, in this worker:

* **Registry sync** — one owned task re-reads the live runtime deployments and
  rollouts when told (an announcement on the bus, a reconnect), when the first
  registration is due to lapse, and every ``routing.registration.refresh_s``
  anyway; each pool gets its configured deployments plus the live runtime ones.
  Expiry is evaluated by time in every worker (the read returns only rows whose
  ``expires_at`` is in the future), so no janitor process is needed and an engine
  that stops heartbeating leaves every worker's pools at its expiry.
* **Rollback** — as a settler it sees each request a rollout's candidate served;
  when the ``RollbackMonitor`` trips, the split drops to 0 % here at once, and the
  rollback is persisted, audited and announced (once across all workers).
* **Shadow** — the router hands it shadowed requests; copies go to the candidate
  over this worker's own connection pools (``shadow_upstreams``), never the client's.

Costs nothing per request for models without versions: ``settle`` returns on one
attribute test, and the router never calls the shadow hook.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Protocol

from lockgate.config import RuntimeConfig
from lockgate.controlplane.actions.base import SYSTEM
from lockgate.controlplane.actions.deployments import (
    TOPIC_DEPLOYMENTS,
    TOPIC_ROLLOUTS,
    DeploymentActions,
)
from lockgate.dataplane.context import RequestContext
from lockgate.dataplane.pipeline.route import BalancingRouter
from lockgate.dataplane.shadow_copy import ShadowCopier
from lockgate.dataplane.upstreams import Upstreams
from lockgate.invalidation.bus import InvalidationBus
from lockgate.routing.pool import RoutePlan
from lockgate.routing.registry import next_expiry, serving_entries, targets_by_entry
from lockgate.routing.selection import VersionedModel
from lockgate.routing.shadow import ShadowAnswer, ShadowSender
from lockgate.store.columns import utc_now
from lockgate.store.repositories.deployments import (
    RolloutRecord,
    RuntimeDeployment,
    registry_of,
    rollouts_of,
)
from lockgate.store.store import Store

log = logging.getLogger("lockgate.lifecycle")

# Never re-read the registry more often than this, whatever expires when.
_MIN_RELOAD_S = 0.05


class RegistrySource(Protocol):
    async def live_deployments(self) -> list[RuntimeDeployment]: ...
    async def rollouts(self) -> list[RolloutRecord]: ...


class StoreRegistry:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def live_deployments(self) -> list[RuntimeDeployment]:
        return list(await registry_of(self._store).live())

    async def rollouts(self) -> list[RolloutRecord]:
        return list(await rollouts_of(self._store).all())


RollBack = Callable[[str, str, str], Awaitable[bool]]


class ModelLifecycle:
    def __init__(
        self,
        config: RuntimeConfig,
        source: RegistrySource,
        roll_back: RollBack | None = None,
        actions: DeploymentActions | None = None,
    ) -> None:
        self._config = config
        # The admin side of the same store and bus (the admin app serves it).
        self.actions = actions
        self._source = source
        self._roll_back = roll_back
        self._entries = serving_entries(config.models)
        self._registration = config.routing.registration
        self._router: BalancingRouter | None = None
        self._by_version: dict[str, VersionedModel] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._persisting: set[asyncio.Task[None]] = set()
        self.shadow = ShadowSender()
        self._copier: ShadowCopier | None = None
        self.loaded = asyncio.Event()  # set after every successful load (tests wait on it)
        self.loads = 0

    @classmethod
    def for_services(
        cls, config: RuntimeConfig, store: Store, bus: InvalidationBus
    ) -> ModelLifecycle:
        """The production wiring: the store as source, rollbacks through the admin actions,
        and the bus's announcements (subscribe before ``bus.start``)."""
        actions = DeploymentActions(store, bus, config)

        async def roll_back(model: str, candidate: str, reason: str) -> bool:
            return await actions.roll_back(SYSTEM, model, candidate, reason)

        lifecycle = cls(config, StoreRegistry(store), roll_back, actions)
        bus.subscribe(TOPIC_DEPLOYMENTS, lifecycle.changed)
        bus.subscribe(TOPIC_ROLLOUTS, lifecycle.changed)
        bus.on_reconnect(lifecycle.changed_all)
        return lifecycle

    @property
    def is_needed_per_request(self) -> bool:
        """Whether the settle stage must see requests (only versioned models roll back)."""
        return any(m.versions for m in self._config.models)

    # -- wiring ------------------------------------------------------------------------
    def attach(self, router: BalancingRouter) -> None:
        """Serve this router's pools and rollouts; starts the sync task (in the loop)."""
        self._router = router
        self._by_version = {
            version.name: versioned
            for versioned in router.versioned.values()
            for version in versioned.public.versions
        }
        if router.versioned:
            self._copier = ShadowCopier(Upstreams(self._config))
            router.shadow = self._submit_shadow
        self._task = asyncio.get_running_loop().create_task(self._sync())

    async def close(self) -> None:
        """Stop syncing, cancel shadow copies, finish persisting rollbacks."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.shadow.close()
        if self._persisting:
            await asyncio.gather(*self._persisting, return_exceptions=True)
        if self._copier is not None:
            self._copier.close()

    # -- bus handlers (synchronous, cheap: they only wake the sync task) ---------------
    def changed(self, _key: str) -> None:
        self._wake.set()

    def changed_all(self) -> None:
        self._wake.set()

    # -- the sync task -----------------------------------------------------------------
    async def _sync(self) -> None:
        refresh_s = self._registration.refresh_s
        while True:
            self._wake.clear()
            wait_s = refresh_s
            try:
                wait_s = min(refresh_s, await self.reload())
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reading runtime deployments failed; retrying")
                wait_s = min(refresh_s, 1.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(_MIN_RELOAD_S, wait_s))

    async def reload(self) -> float:
        """Apply what the store holds now; seconds until the next registration lapses."""
        rows = await self._source.live_deployments()
        records = await self._source.rollouts()
        self._apply_deployments(rows)
        self._apply_rollouts(records)
        self.loads += 1
        self.loaded.set()
        expiry = next_expiry(rows)
        return float("inf") if expiry is None else _seconds_until(expiry)

    def _apply_deployments(self, rows: list[RuntimeDeployment]) -> None:
        router = self._router
        if router is None:
            return
        for name, targets in targets_by_entry(self._entries, rows).items():
            pool = router.pool_of(name)
            if pool is not None and tuple(m.target for m in pool.members) != targets:
                pool.replace_deployments(targets)

    def _apply_rollouts(self, records: list[RolloutRecord]) -> None:
        router = self._router
        if router is None:
            return
        stored = {r.model: r for r in records}
        for name, versioned in router.versioned.items():
            rollout = versioned.rollout
            was_live = (rollout.candidate, rollout.is_rolled_back)
            record = stored.get(name)
            if record is not None:
                rollout.set(
                    candidate=record.candidate,
                    percent=record.percent,
                    shadow_percent=record.shadow_percent,
                    is_rolled_back=record.is_rolled_back,
                    reason=record.reason or "",
                )
            elif not rollout.is_rolled_back:
                spec = versioned.public.rollout
                rollout.set(
                    candidate=spec.candidate if spec else "",
                    percent=spec.percent if spec else 0.0,
                    shadow_percent=spec.shadow.percent if spec and spec.shadow else 0.0,
                    is_rolled_back=False,
                )
            # else: rolled back here and not recorded yet (or recording failed): it stays
            # so; only an operator's resume (a stored row) brings the candidate back.
            if (rollout.candidate, rollout.is_rolled_back) != was_live:
                versioned.monitor.reset()  # a new candidate (or a resume) starts a new window

    # -- settle: the candidate's answers feed its rollback monitor ---------------------
    def settle(self, ctx: RequestContext) -> None:
        model = ctx.model
        if model is None or not model.version:
            return
        if self.shadow.is_pending(ctx.request_id):
            self._primary_settled(ctx)
        versioned = self._by_version.get(model.name)
        if versioned is None or not versioned.is_candidate(model.version):
            return
        rollout = versioned.rollout
        if not rollout.rollback.enabled or ctx.is_client_disconnected:
            return
        error = ctx.error
        is_error = ctx.status >= 500 or (error is not None and error.source.value == "upstream")
        latency_s = None
        if ctx.upstream_sent_at is not None and ctx.finished_at is not None:
            latency_s = ctx.finished_at - ctx.upstream_sent_at
        now = ctx.finished_at or ctx.started_at
        reason = versioned.monitor.record(now, is_error, latency_s)
        if reason is not None:
            self._trip(versioned, reason)

    def _primary_settled(self, ctx: RequestContext) -> None:
        latency_ms = None
        if ctx.finished_at is not None:
            latency_ms = (ctx.finished_at - ctx.started_at) * 1000
        usage = ctx.usage
        self.shadow.primary_settled(
            ctx.request_id,
            ctx.status,
            latency_ms,
            usage.completion_tokens if usage is not None else None,
        )

    def _trip(self, versioned: VersionedModel, reason: str) -> None:
        rollout = versioned.rollout
        candidate = rollout.candidate
        rollout.roll_back(reason)
        versioned.monitor.reset()
        log.warning("rolled back %s: candidate %s %s", versioned.public.name, candidate, reason)
        if self._roll_back is not None:
            task = asyncio.get_running_loop().create_task(
                self._persist(versioned.public.name, candidate, reason)
            )
            self._persisting.add(task)
            task.add_done_callback(self._persisting.discard)

    async def _persist(self, model: str, candidate: str, reason: str) -> None:
        assert self._roll_back is not None
        try:
            await self._roll_back(model, candidate, reason)
        except Exception:
            # The split stays at 0 % in this worker; the others judge for themselves.
            log.exception("recording the rollback of %s failed", model)

    # -- shadow ------------------------------------------------------------------------
    def _submit_shadow(self, ctx: RequestContext, plan: RoutePlan) -> None:
        model = ctx.model
        assert model is not None
        versioned = self._router.versioned.get(model.name) if self._router else None
        shadow = versioned.rollout.shadow if versioned is not None else None
        if shadow is None:
            return
        body = dict(ctx.body) if ctx.body is not None else None
        candidate = plan.pool.model.name

        copier = self._copier
        assert copier is not None

        async def send() -> ShadowAnswer:
            return await copier.send(ctx, plan, body)

        self.shadow.submit(
            ctx.request_id,
            model.name,
            candidate,
            send,
            max_concurrency=shadow.max_concurrency,
            timeout_s=shadow.timeout_s,
        )


def _seconds_until(when: datetime) -> float:
    return (when - utc_now()).total_seconds()
