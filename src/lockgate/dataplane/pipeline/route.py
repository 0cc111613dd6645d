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

from typing import Protocol

from lockgate.config import ModelEntry, RuntimeConfig
from lockgate.dataplane.context import RequestContext
from lockgate.errors import EndpointNotFound, ModelNotFound
from lockgate.operations import Operation
from lockgate.routing.checks import HealthChecker, Probe
from lockgate.routing.pool import RoutePlan, build_plans


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
        return self._plans[model.name]

    def plan_for(self, model_name: str) -> RoutePlan:
        """A model's plan by name (operators' tools and tests look at its live state)."""
        return self._plans[model_name]

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
