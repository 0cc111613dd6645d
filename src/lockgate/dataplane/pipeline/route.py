"""Stage 4 — route: which model does the client mean, and where may its request go?

``resolve`` names the model (before authorisation, so permissions are checked
on the model actually asked for). ``plan`` hands the forward stage the
model's ``RoutePlan``: its pool of deployments — each with live load, latency
and health — then its fallbacks, and the retry budget. Choosing a deployment
happens per attempt, in forward, because a retry must choose again.

The domain (strategies, health, budgets) is ``lockgate.routing``; this module
only adapts the request to it and owns its background work (active health
checks), started and stopped with the data plane.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from lockgate.config import ModelEntry, RuntimeConfig
from lockgate.dataplane.context import RequestContext
from lockgate.errors import EndpointNotFound, ModelNotFound
from lockgate.operations import Operation
from lockgate.routing.checks import HealthChecker, Probe
from lockgate.routing.pool import Pool, RoutePlan, build_plans
from lockgate.routing.selection import VersionedModel
from lockgate.routing.versions import is_retired, pinned_names, retired_error

# Told of a request whose copy goes to a rollout's candidate (shadow traffic).
ShadowHook = Callable[[RequestContext, RoutePlan], None]


class Router(Protocol):
    def resolve(self, ctx: RequestContext) -> ModelEntry:
        """The model the client asked for; ``ModelNotFound`` if there is none."""
        ...

    def plan(self, ctx: RequestContext) -> RoutePlan:
        """Where a request for ``ctx.model`` may go: its deployments, then its fallbacks."""
        ...


class BalancingRouter:
    """Resolves model names and keeps one route plan (pool + fallbacks) per model."""

    def __init__(self, config: RuntimeConfig, *, probe: Probe | None = None) -> None:
        self._index = config.model_index
        self._plans = build_plans(config.models, config.routing.retry_budget)
        pools = [plan.pool for plan in self._plans.values()]
        # Versioned models (routing/selection.py): by public name, and every pinned
        # name (name@version, alias@version) to (model, version).
        self.versioned = {
            m.name: VersionedModel(m, self._plans) for m in config.models if m.versions
        }
        self._pinned = {
            name: (m, version) for m in config.models for name, version in pinned_names(m).items()
        }
        self.shadow: ShadowHook | None = None  # set when shadow traffic can be sent
        self.checker = HealthChecker(pools, probe) if probe is not None else None
        # Passthrough path -> the models that declare it, in config order.
        self._passthrough: dict[str, list[ModelEntry]] = {}
        for model in config.models:
            for path in sorted({p for d in model.deployments for p in d.passthrough}):
                self._passthrough.setdefault(path, []).append(model)

    # -- lifecycle (the data plane calls these inside its event loop) ------------------
    def start(self) -> None:
        """Start active health checks, for the models that configure them."""
        if self.checker is not None:
            self.checker.start()

    def close(self) -> None:
        if self.checker is not None:
            self.checker.close()

    # -- per request ---------------------------------------------------------------
    def serves_passthrough(self, path: str) -> bool:
        return path in self._passthrough

    def resolve(self, ctx: RequestContext) -> ModelEntry:
        if ctx.operation is Operation.PASSTHROUGH:
            return self._resolve_passthrough(ctx)
        model = self._index.get(ctx.requested_model)
        if model is None and ctx.requested_model in self._pinned:
            model, version = self._pinned[ctx.requested_model]
            if is_retired(version):
                raise retired_error(model, version)
        if model is None:
            raise ModelNotFound(
                f"The model '{ctx.requested_model}' does not exist or is not served here; "
                "GET /v1/models lists the models you can use.",
                param="model",
            )
        return model

    def plan(self, ctx: RequestContext) -> RoutePlan:
        model = ctx.model
        assert model is not None
        plan = self._plans.get(model.name)
        if plan is not None:  # unversioned: one lookup, nothing else
            return plan
        principal = ctx.principal
        plan, shadow = self.versioned[model.name].choose(
            ctx.requested_model,
            ctx.http.headers,
            ctx.body,
            None if principal.is_anonymous else principal.id,
        )
        if shadow is not None and self.shadow is not None:
            self.shadow(ctx, shadow)
        return plan

    def plan_for(self, model_name: str) -> RoutePlan:
        """A model's plan by name (operators' tools and tests look at its live state);
        a versioned model's plain name means its default version."""
        versioned = self.versioned.get(model_name)
        return versioned.default if versioned is not None else self._plans[model_name]

    def pool_of(self, entry_name: str) -> Pool | None:
        """The pool serving a model or ``name@version`` (None: no such thing here)."""
        plan = self._plans.get(entry_name)
        return None if plan is None else plan.pool

    def _resolve_passthrough(self, ctx: RequestContext) -> ModelEntry:
        declaring = self._passthrough.get(ctx.http.path)
        if not declaring:
            raise EndpointNotFound(f"No endpoint {ctx.http.path} is served here.")
        if ctx.requested_model:
            for model in declaring:
                if model is self._index.get(ctx.requested_model):
                    return model
            raise ModelNotFound(
                f"The model '{ctx.requested_model}' does not serve {ctx.http.path}.",
                param="model",
            )
        if len(declaring) > 1:
            raise ModelNotFound(
                f"Several models serve {ctx.http.path}; name one in the 'model' field.",
                param="model",
            )
        return declaring[0]
