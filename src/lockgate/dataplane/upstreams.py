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

    __slots__ = ("deadlines", "origin", "template")

    def __init__(self, origin: Origin, template: RequestTemplate, deadlines: Deadlines) -> None:
        self.origin = origin
        self.template = template
        self.deadlines = deadlines


class Upstreams:
    def __init__(self, config: RuntimeConfig) -> None:
        self._origins: dict[tuple[str, str, int], Origin] = {}
        self._bindings: dict[tuple[str, str], UpstreamBinding] = {}
        tls: ssl.SSLContext | None = None
        for model in config.models:
            for dep in model.deployments:
                origin = self._origins.get(dep.origin_key)
                if origin is None:
                    if dep.scheme == "https" and tls is None:
                        tls = ssl.create_default_context()
                    origin = Origin(
                        dep.scheme, dep.host, dep.port, tls=tls if dep.scheme == "https" else None
                    )
                    self._origins[dep.origin_key] = origin
                t = dep.timeouts
                self._bindings[(model.name, dep.name)] = UpstreamBinding(
                    origin,
                    RequestTemplate(dep, origin.host_header),
                    Deadlines(t.connect_s, t.first_byte_s, t.idle_s, t.total_s),
                )

    def binding(self, deployment: DeploymentTarget) -> UpstreamBinding:
        return self._bindings[(deployment.model_name, deployment.name)]

    def close(self) -> None:
        for origin in self._origins.values():
            origin.close()
