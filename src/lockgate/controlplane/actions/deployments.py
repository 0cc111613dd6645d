"""Runtime deployments and rollouts: each change, its audit entry, then the announcement.

Shared by the admin API and the operator commands. Every change commits with
its audit entry (deployment-wide: no organisation), then is announced on the
invalidation bus (``TOPIC_DEPLOYMENTS`` / ``TOPIC_ROLLOUTS``, keyed by model),
so every worker re-reads the registry within a second. Heartbeats are the one
exception: they only move an expiry forward, are not audited (one per engine
every few seconds would drown the trail) and need no announcement (workers
read expiries when they are due).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from pydantic import ValidationError

from lockgate.config import ModelEntry, RuntimeConfig
from lockgate.config.spec import DeploymentSpec
from lockgate.controlplane.actions.base import Actor, audit
from lockgate.errors import ClientError
from lockgate.invalidation.bus import InvalidationBus
from lockgate.routing.registry import check_base_url, serving_entries
from lockgate.routing.versions import is_retired
from lockgate.store.columns import utc_now
from lockgate.store.errors import Conflict, ConflictReason, NotFound
from lockgate.store.repositories.deployments import (
    RolloutRecord,
    RuntimeDeployment,
    registry_of,
    rollouts_of,
)
from lockgate.store.store import Store

TOPIC_DEPLOYMENTS = "deployments"  # key: the model (or name@version) whose deployments changed
TOPIC_ROLLOUTS = "rollouts"  # key: the versioned model whose split changed


class InvalidDeployment(ClientError):
    status = 422
    code = "invalid_deployment"


class InvalidRollout(ClientError):
    status = 422
    code = "invalid_rollout"


@dataclass(frozen=True, slots=True)
class DeploymentInput:
    """A deployment as the admin API or an engine describes it."""

    name: str
    base_url: str
    upstream_model: str | None = None
    capacity: int | None = None
    weight: float = 1.0
    tags: Mapping[str, str] = field(default_factory=dict)


def deployment_summary(dep: RuntimeDeployment) -> dict[str, Any]:
    return {
        "model": dep.model,
        "name": dep.name,
        "base_url": dep.base_url,
        "upstream_model": dep.upstream_model,
        "capacity": dep.capacity,
        "weight": dep.weight,
        "tags": dict(dep.tags),
        "source": dep.source,
    }


def rollout_summary(record: RolloutRecord) -> dict[str, Any]:
    return {
        "model": record.model,
        "candidate": record.candidate,
        "percent": record.percent,
        "shadow_percent": record.shadow_percent,
        "is_rolled_back": record.is_rolled_back,
        "reason": record.reason,
    }


class DeploymentActions:
    """Built once per process with the store, the bus and the (resolved) config."""

    def __init__(self, store: Store, bus: InvalidationBus, config: RuntimeConfig) -> None:
        self._store = store
        self._bus = bus
        self._config = config
        self._entries = serving_entries(config.models)
        self._versioned = {m.name: m for m in config.models if m.versions}
        self.registration = config.routing.registration

    @property
    def config(self) -> RuntimeConfig:
        return self._config

    # -- deployments ------------------------------------------------------------------
    async def add(self, actor: Actor, model: str, spec: DeploymentInput) -> RuntimeDeployment:
        """An operator's deployment: serves until removed."""
        self._check(model, spec, is_engine=False)
        async with self._store.transaction() as tx:
            dep = await registry_of(tx).put(
                **_fields(model, spec), source="admin", registered_by=actor.id, expires_at=None
            )
            await audit(
                tx, actor, "deployment.add", "deployment", dep.id, None,
                after=deployment_summary(dep),
            )  # fmt: skip
        await self._bus.publish(TOPIC_DEPLOYMENTS, model)
        return dep

    async def register(self, actor: Actor, model: str, spec: DeploymentInput) -> RuntimeDeployment:
        """An engine's own registration (or re-registration): serves while it heartbeats."""
        self._check(model, spec, is_engine=True)
        expires_at = utc_now() + timedelta(seconds=self.registration.expire_after_s)
        async with self._store.transaction() as tx:
            dep = await registry_of(tx).put(
                **_fields(model, spec),
                source="engine",
                registered_by=actor.id,
                expires_at=expires_at,
            )
            await audit(
                tx, actor, "deployment.register", "deployment", dep.id, None,
                after=deployment_summary(dep),
            )  # fmt: skip
        await self._bus.publish(TOPIC_DEPLOYMENTS, model)
        return dep

    async def heartbeat(self, model: str, name: str) -> bool:
        """Keep a registration alive; False when it has lapsed (the engine registers again)."""
        expires_at = utc_now() + timedelta(seconds=self.registration.expire_after_s)
        return await registry_of(self._store).heartbeat(model, name, expires_at=expires_at)

    async def remove(self, actor: Actor, model: str, name: str, *, source: str) -> None:
        """Remove a deployment added by ``source`` ("admin", or "engine" deregistering)."""
        async with self._store.transaction() as tx:
            registry = registry_of(tx)
            dep = await registry.get(model, name)
            if dep.source != source:
                raise NotFound(f"deployment {name!r} of {model!r} not found")
            await registry.remove(model, name, source=source)
            action = "deployment.remove" if source == "admin" else "deployment.deregister"
            await audit(
                tx, actor, action, "deployment", dep.id, None, before=deployment_summary(dep)
            )
        await self._bus.publish(TOPIC_DEPLOYMENTS, model)

    async def live(self) -> list[RuntimeDeployment]:
        return list(await registry_of(self._store).live())

    def _check(self, model: str, spec: DeploymentInput, *, is_engine: bool) -> None:
        entry = self._entries.get(model)
        if entry is None:
            versioned = self._versioned.get(model)
            hint = (
                f"; name a version: {', '.join(v.name for v in versioned.versions)}"
                if versioned is not None
                else ""
            )
            raise NotFound(f"model {model!r} is not configured here{hint}")
        try:
            DeploymentSpec(
                name=spec.name,
                base_url=spec.base_url,
                upstream_model=spec.upstream_model,
                capacity=spec.capacity,
                weight=spec.weight,
            )
        except ValidationError as exc:
            problem = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            raise InvalidDeployment(problem) from None
        if any(d.name == spec.name for d in entry.deployments):
            raise Conflict(
                f"{model!r} has a configured deployment named {spec.name!r}",
                reason=ConflictReason.DUPLICATE,
            )
        if is_engine:
            why = check_base_url(spec.base_url, self.registration.allowed_networks)
            if why is not None:
                raise InvalidDeployment(f"base_url {why}", param="base_url")

    # -- rollouts ---------------------------------------------------------------------
    def rollout_state(self, model: str, record: RolloutRecord | None) -> dict[str, Any]:
        """What serves ``model`` now: the stored state, else the config's."""
        public = self._versioned_model(model)
        if record is not None:
            state = rollout_summary(record)
        else:
            spec = public.rollout
            state = {
                "model": model,
                "candidate": spec.candidate if spec else None,
                "percent": spec.percent if spec else 0.0,
                "shadow_percent": spec.shadow.percent if spec and spec.shadow else 0.0,
                "is_rolled_back": False,
                "reason": None,
            }
        return {"default_version": public.default_version, **state}

    async def get_rollout(self, model: str) -> dict[str, Any]:
        return self.rollout_state(model, await rollouts_of(self._store).get(model))

    async def set_rollout(
        self,
        actor: Actor,
        model: str,
        *,
        candidate: str | None = None,
        percent: float | None = None,
        shadow_percent: float | None = None,
    ) -> dict[str, Any]:
        """Change the split (fields left None keep their value). Setting it clears a
        rollback only through ``resume_rollout``: a rolled-back candidate stays at 0 %."""
        public = self._versioned_model(model)
        async with self._store.transaction() as tx:
            rollouts = rollouts_of(tx)
            before = self.rollout_state(model, await rollouts.get(model))
            chosen = candidate if candidate is not None else before["candidate"]
            self._check_candidate(public, chosen)
            is_rolled_back = bool(before["is_rolled_back"]) and chosen == before["candidate"]
            record = await rollouts.put(
                model=model,
                candidate=chosen,
                percent=before["percent"] if percent is None else percent,
                shadow_percent=before["shadow_percent"]
                if shadow_percent is None
                else shadow_percent,
                is_rolled_back=is_rolled_back,
                reason=before["reason"] if is_rolled_back else None,
                updated_by=actor.id,
            )
            after = self.rollout_state(model, record)
            await audit(tx, actor, "rollout.set", "model", model, None, before=before, after=after)
        await self._bus.publish(TOPIC_ROLLOUTS, model)
        return after

    async def resume_rollout(self, actor: Actor, model: str) -> dict[str, Any]:
        """An operator's all-clear after a rollback: the split applies again."""
        self._versioned_model(model)
        async with self._store.transaction() as tx:
            rollouts = rollouts_of(tx)
            record = await rollouts.get(model)
            if record is None or not record.is_rolled_back:
                raise InvalidRollout(f"the rollout of {model!r} is not rolled back")
            resumed = await rollouts.put(
                model=model,
                candidate=record.candidate,
                percent=record.percent,
                shadow_percent=record.shadow_percent,
                is_rolled_back=False,
                reason=None,
                updated_by=actor.id,
            )
            after = self.rollout_state(model, resumed)
            await audit(
                tx, actor, "rollout.resume", "model", model, None,
                before=rollout_summary(record), after=after,
            )  # fmt: skip
        await self._bus.publish(TOPIC_ROLLOUTS, model)
        return after

    async def roll_back(self, actor: Actor, model: str, candidate: str, reason: str) -> bool:
        """The automatic rollback: persist it, audit it, announce it — once, however many
        workers saw the candidate fail at the same moment. Whether this call did it."""
        public = self._versioned_model(model)
        async with self._store.transaction() as tx:
            rollouts = rollouts_of(tx)
            record = await rollouts.get(model)
            if record is None:
                spec = public.rollout
                if spec is None or spec.candidate != candidate:
                    return False
                shadow = spec.shadow.percent if spec.shadow else 0.0
                before = self.rollout_state(model, None)
                record = await rollouts.put(
                    model=model, candidate=candidate, percent=spec.percent,
                    shadow_percent=shadow, is_rolled_back=True, reason=reason,
                    updated_by=actor.id,
                )  # fmt: skip
            else:
                before = rollout_summary(record)
                if not await rollouts.roll_back(model, candidate, reason=reason, by=actor.id):
                    return False
                record = await rollouts.get(model)
                assert record is not None
            after = self.rollout_state(model, record)
            await audit(
                tx, actor, "rollout.rolled_back", "model", model, None, before=before, after=after
            )
        await self._bus.publish(TOPIC_ROLLOUTS, model)
        return True

    def _versioned_model(self, model: str) -> ModelEntry:
        public = self._versioned.get(model)
        if public is None:
            raise NotFound(f"model {model!r} has no versions here, so no rollout")
        return public

    @staticmethod
    def _check_candidate(public: ModelEntry, candidate: str | None) -> None:
        if candidate is None:
            raise InvalidRollout(
                f"name the candidate version of {public.name!r}", param="candidate"
            )
        versions = {v.version: v for v in public.versions}
        version = versions.get(candidate)
        if version is None:
            raise InvalidRollout(
                f"{candidate!r} is not a version of {public.name!r} ({', '.join(versions)})",
                param="candidate",
            )
        if candidate == public.default_version:
            raise InvalidRollout(f"{candidate!r} is the default version", param="candidate")
        if is_retired(version):
            raise InvalidRollout(f"{candidate!r} is retired", param="candidate")


def _fields(model: str, spec: DeploymentInput) -> dict[str, Any]:
    return {
        "model": model,
        "name": spec.name,
        "base_url": spec.base_url.rstrip("/"),
        "upstream_model": spec.upstream_model,
        "capacity": spec.capacity,
        "weight": spec.weight,
        "tags": dict(spec.tags),
    }
