"""Stage 4 — route: which model does the client mean, and which deployment serves it?"""

from __future__ import annotations

from typing import Protocol

from lockgate.config import DeploymentTarget, ModelEntry, RuntimeConfig
from lockgate.dataplane.context import RequestContext
from lockgate.errors import EndpointNotFound, ModelNotFound, NoDeploymentAvailable
from lockgate.operations import Operation


class Router(Protocol):
    def resolve(self, ctx: RequestContext) -> ModelEntry:
        """The model the client asked for; ``ModelNotFound`` if there is none."""
        ...

    def choose(self, ctx: RequestContext) -> DeploymentTarget:
        """The deployment to try for ``ctx.model``."""
        ...


class RoundRobinRouter:
    """Rotates over a model's deployments (the baseline the routing issue improves on)."""

    def __init__(self, config: RuntimeConfig) -> None:
        self._index = config.model_index
        self._counters: dict[str, int] = {}
        # Passthrough path -> the models that declare it, in config order.
        self._passthrough: dict[str, list[ModelEntry]] = {}
        for model in config.models:
            for path in sorted({p for d in model.deployments for p in d.passthrough}):
                self._passthrough.setdefault(path, []).append(model)

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

    def choose(self, ctx: RequestContext) -> DeploymentTarget:
        model = ctx.model
        assert model is not None
        candidates = model.deployments
        if ctx.operation is Operation.PASSTHROUGH:
            candidates = tuple(d for d in candidates if ctx.http.path in d.passthrough)
        if not candidates:
            raise NoDeploymentAvailable(f"No deployment of '{model.name}' is available.")
        turn = self._counters.get(model.name, 0)
        self._counters[model.name] = turn + 1
        return candidates[turn % len(candidates)]
