"""Connection pools and request templates for every configured deployment.

Built once per worker process inside its event loop; owned by the data plane
and closed with it.
"""

from __future__ import annotations

import ssl

from lockgate.config import DeploymentTarget, RuntimeConfig
from lockgate.http.client import Deadlines, Origin
from lockgate.providers.openai_compat import RequestTemplate


class UpstreamBinding:
    """Everything needed to call one deployment, resolved ahead of time."""

    __slots__ = ("deadlines", "origin", "target", "template")

    def __init__(
        self,
        origin: Origin,
        template: RequestTemplate,
        deadlines: Deadlines,
        target: DeploymentTarget | None = None,
    ) -> None:
        self.origin = origin
        self.template = template
        self.deadlines = deadlines
        self.target = target  # what it was built for (deployments change at runtime)


class Upstreams:
    """Bindings for the configured deployments, built up front; deployments added at
    runtime (admin API, engine registration) are bound on their first request."""

    def __init__(self, config: RuntimeConfig) -> None:
        self._origins: dict[tuple[str, str, int], Origin] = {}
        self._bindings: dict[tuple[str, str], UpstreamBinding] = {}
        self._tls: ssl.SSLContext | None = None
        for model in config.models:
            for entry in model.versions or (model,):
                for dep in entry.deployments:
                    self._bind(dep)

    def binding(self, deployment: DeploymentTarget) -> UpstreamBinding:
        binding = self._bindings.get((deployment.model_name, deployment.name))
        if binding is None or binding.target is not deployment:
            binding = self._bind(deployment)  # new, or re-registered with other settings
        return binding

    def _bind(self, dep: DeploymentTarget) -> UpstreamBinding:
        origin = self._origins.get(dep.origin_key)
        if origin is None:
            tls = None
            if dep.scheme == "https":
                if self._tls is None:
                    self._tls = ssl.create_default_context()
                tls = self._tls
            origin = Origin(dep.scheme, dep.host, dep.port, tls=tls)
            self._origins[dep.origin_key] = origin
        t = dep.timeouts
        binding = UpstreamBinding(
            origin,
            RequestTemplate(dep, origin.host_header),
            Deadlines(t.connect_s, t.first_byte_s, t.idle_s, t.total_s),
            dep,
        )
        self._bindings[(dep.model_name, dep.name)] = binding
        return binding

    def close(self) -> None:
        for origin in self._origins.values():
            origin.close()
