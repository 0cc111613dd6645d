"""Resolved configuration: what the data plane runs with.

Built once at start-up from a validated spec. Secrets are read here (and only
here), URLs are split into origin and path, and timeouts are merged
(deployment over model over global) so the hot path only reads attributes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from lockgate.admission.spec import NO_LIMITS, LimitSpec
from lockgate.config.loader import ConfigError
from lockgate.config.spec import (
    AdmissionSpec,
    AuthSpec,
    GatewaySpec,
    MeteringSpec,
    ObservabilitySpec,
    Pricing,
    SecretRef,
    ServerSpec,
    Timeouts,
)
from lockgate.routing.lifecycle_spec import RolloutSpec, VersionLifecycleSpec
from lockgate.routing.spec import FallbackSpec, ModelRoutingSpec, RoutingSpec, merge_routing
from lockgate.routing.versions import expand_versions, nest_versions


@dataclass(frozen=True, slots=True)
class DeploymentTarget:
    """One upstream target serving a model."""

    name: str
    model_name: str
    scheme: str
    host: str
    port: int
    base_path: str
    upstream_model: str
    authorization: bytes | None
    timeouts: Timeouts
    passthrough: frozenset[str]
    forward_headers: frozenset[bytes]
    forward_header_prefixes: tuple[bytes, ...]
    capacity: int | None = None
    weight: float = 1.0
    supports_continuation: bool = False

    @property
    def origin_key(self) -> tuple[str, str, int]:
        return (self.scheme, self.host, self.port)

    def upstream_path(self, client_path: str) -> str:
        """Map a client path under /v1 onto the deployment's base path."""
        return self.base_path + client_path.removeprefix("/v1")


@dataclass(frozen=True, slots=True)
class ModelEntry:
    name: str
    aliases: tuple[str, ...]
    deployments: tuple[DeploymentTarget, ...]
    tags: frozenset[tuple[str, str]] = frozenset()
    limits: LimitSpec = NO_LIMITS
    pricing: Pricing | None = None
    # Routing settings already merged over routing.defaults.
    routing: ModelRoutingSpec = field(default_factory=ModelRoutingSpec)
    # Fallback models in order, by their canonical names (aliases resolved).
    fallbacks: tuple[FallbackSpec, ...] = ()
    # Timeouts merged over the global ones (deployments added at runtime start from these).
    timeouts: Timeouts = field(default_factory=Timeouts)
    # Versions (routing/versions.py). A public entry: its versions (each an entry named
    # name@version), the default and the rollout. A version entry: ``version``, its
    # lifecycle and the Deprecation/Sunset lines its answers carry.
    versions: tuple[ModelEntry, ...] = ()
    default_version: str = ""
    rollout: RolloutSpec | None = None
    version: str = ""
    lifecycle: VersionLifecycleSpec | None = None
    response_headers: bytes = b""

    @property
    def capacity(self) -> int | None:
        """Requests the model's deployments serve at once, if every one declares it."""
        capacities = [d.capacity for d in self.deployments]
        if not capacities or any(c is None for c in capacities):
            return None
        return sum(c for c in capacities if c is not None)


@dataclass(frozen=True, slots=True)
class RuntimeConfig:
    server: ServerSpec
    models: tuple[ModelEntry, ...]
    # Every public name (model names and aliases) to its model.
    model_index: dict[str, ModelEntry]
    auth: AuthSpec = field(default_factory=AuthSpec)
    database_url: str | None = None  # None: embedded SQLite in server.data_dir
    redis_url: str | None = None
    redis_key_prefix: str = "lockgate:"
    admission: AdmissionSpec = field(default_factory=AdmissionSpec)
    observability: ObservabilitySpec = field(default_factory=ObservabilitySpec)
    metering: MeteringSpec = field(default_factory=MeteringSpec)
    routing: RoutingSpec = field(default_factory=RoutingSpec)


def resolve(spec: GatewaySpec, *, source: str = "<config>") -> RuntimeConfig:
    problems: list[str] = []
    models = []
    canonical = {name: m.name for m in spec.models for name in (m.name, *m.aliases)}
    # Each version is resolved as a model of its own (name@version), then nested.
    for m_index, model in enumerate(expand_versions(spec.models)):
        model_timeouts = _merge(spec.timeouts, model.timeouts)
        targets = []
        for d_index, dep in enumerate(model.deployments):
            where = f"models[{m_index}].deployments[{d_index}]"
            url = urlsplit(dep.base_url)
            authorization = None
            if dep.api_key is not None:
                try:
                    secret = read_secret(dep.api_key)
                except ValueError as exc:
                    problems.append(f"{where}.api_key: {exc}")
                    secret = ""
                authorization = b"Bearer " + secret.encode()
            exact = frozenset(h.encode() for h in dep.forward_headers if not h.endswith("*"))
            prefixes = tuple(h[:-1].encode() for h in dep.forward_headers if h.endswith("*"))
            targets.append(
                DeploymentTarget(
                    name=dep.name,
                    model_name=model.name,
                    scheme=url.scheme,
                    host=url.hostname or "",
                    port=url.port or (443 if url.scheme == "https" else 80),
                    base_path=url.path or "",
                    upstream_model=dep.upstream_model or model.name,
                    authorization=authorization,
                    timeouts=_merge(model_timeouts, dep.timeouts),
                    passthrough=frozenset(dep.passthrough),
                    forward_headers=exact,
                    forward_header_prefixes=prefixes,
                    capacity=dep.capacity,
                    weight=dep.weight,
                    supports_continuation=dep.supports_continuation,
                )
            )
        models.append(
            ModelEntry(
                model.name,
                tuple(model.aliases),
                tuple(targets),
                frozenset(model.tags.items()),
                limits=model.limits,
                pricing=model.pricing,
                routing=merge_routing(spec.routing.defaults, model.routing),
                fallbacks=tuple(
                    f.model_copy(update={"model": canonical[f.model]}) for f in model.fallbacks
                ),
                timeouts=model_timeouts,
            )
        )
    if problems:
        raise ConfigError(source, problems)
    models = nest_versions(spec.models, models)
    index = {name: m for m in models for name in (m.name, *m.aliases)}
    return RuntimeConfig(
        server=spec.server,
        models=tuple(models),
        model_index=index,
        auth=spec.auth,
        database_url=spec.database.url,
        redis_url=spec.redis.url,
        redis_key_prefix=spec.redis.key_prefix,
        admission=spec.admission,
        observability=spec.observability,
        metering=spec.metering,
        routing=spec.routing,
    )


def read_secret(ref: SecretRef) -> str:
    """Resolve a secret reference; raises ValueError naming what is missing (never the value)."""
    if ref.env is not None:
        value = os.environ.get(ref.env)
        if not value:
            raise ValueError(f"environment variable {ref.env} is not set")
        return value.strip()
    assert ref.file is not None
    try:
        value = Path(ref.file).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"cannot read secret file {ref.file}: {exc.strerror or exc}") from None
    if not value:
        raise ValueError(f"secret file {ref.file} is empty")
    return value


def _merge(base: Timeouts, override: Timeouts | None) -> Timeouts:
    if override is None:
        return base
    return base.model_copy(update={k: getattr(override, k) for k in override.model_fields_set})
