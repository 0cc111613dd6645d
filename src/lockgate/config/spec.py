"""What a Lockgate config file may say. Unknown keys are errors, everywhere."""

from __future__ import annotations

import re
from decimal import Decimal
from ipaddress import ip_network
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lockgate.admission.spec import NO_LIMITS, FailurePolicy, LimitSpec
from lockgate.config.base import SecretRef as SecretRef
from lockgate.config.metering_spec import CloudEventsPushSpec as CloudEventsPushSpec
from lockgate.config.metering_spec import MeteringSpec as MeteringSpec
from lockgate.config.observability_spec import ObservabilitySpec as ObservabilitySpec
from lockgate.config.observability_spec import ReadinessSpec as ReadinessSpec
from lockgate.config.observability_spec import TraceBatchSpec as TraceBatchSpec
from lockgate.config.observability_spec import TracingSpec as TracingSpec
from lockgate.routing.lifecycle_spec import (
    RolloutSpec,
    VersionLifecycleSpec,
    check_replacements,
    check_versions,
)
from lockgate.routing.spec import FallbackSpec, ModelRoutingSpec, RoutingSpec

_NAME = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$"
_HEADER_PATTERN = re.compile(r"^[a-z0-9-]+\*?$")


class Strict(BaseModel):
    # Unknown keys are errors; models are frozen. Defined in each spec module, not imported:
    # ruff recognises pydantic models (their list/dict defaults) only by a local base.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Timeouts(Strict):
    connect_s: Annotated[float, Field(gt=0)] = 5.0
    first_byte_s: Annotated[float, Field(gt=0)] = 120.0
    idle_s: Annotated[float, Field(gt=0)] = 60.0
    total_s: Annotated[float, Field(gt=0)] = 900.0


class DeploymentSpec(Strict):
    name: Annotated[str, Field(pattern=_NAME)]
    base_url: str
    upstream_model: str | None = None
    api_key: SecretRef | None = None
    timeouts: Timeouts | None = None
    passthrough: list[Annotated[str, Field(pattern=r"^/v1/[A-Za-z0-9._/-]+$")]] = []
    forward_headers: list[str] = []
    # Requests this replica serves at once. When every deployment of a model sets it,
    # requests beyond the total wait in the admission queue instead of piling on.
    capacity: Annotated[int, Field(ge=1)] | None = None
    # Share of traffic under weighted_random (relative to the model's other deployments),
    # and of keys under cache_affinity.
    weight: Annotated[float, Field(gt=0, le=1_000_000)] = 1.0
    # The engine can continue a partial assistant message (vLLM's continue_final_message):
    # a broken stream may be finished here (docs/routing.md, mid-stream failover).
    supports_continuation: bool = False

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s?#]+(/[^\s?#]*)?$", value):
            raise ValueError("must be an http:// or https:// URL without query or fragment")
        return value.rstrip("/")

    @field_validator("forward_headers")
    @classmethod
    def _header_names(cls, value: list[str]) -> list[str]:
        lowered = [v.lower() for v in value]
        for name in lowered:
            if not _HEADER_PATTERN.match(name):
                raise ValueError(f"{name!r} is not a header name (or a prefix ending in '*')")
            if name in ("authorization", "host", "content-length", "transfer-encoding", "*"):
                raise ValueError(f"{name!r} may not be forwarded")
        return lowered


class Pricing(Strict):
    """Prices per million tokens, for spend limits (the metering ledger has its own catalogue)."""

    input_per_million: Annotated[Decimal, Field(ge=0)] = Decimal(0)
    output_per_million: Annotated[Decimal, Field(ge=0)] = Decimal(0)


class VersionSpec(VersionLifecycleSpec):
    """One version of a model: its lifecycle (``VersionLifecycleSpec``) and deployments."""

    # [] when the version's engines register themselves.
    deployments: list[DeploymentSpec] = Field(default_factory=list)
    # Merged over the model's routing (itself over routing.defaults).
    routing: ModelRoutingSpec | None = None


class ModelSpec(Strict):
    name: Annotated[str, Field(pattern=_NAME)]
    aliases: list[Annotated[str, Field(pattern=_NAME)]] = []
    # Attributes for access conditions, e.g. {classification: unclassified, region: eu}.
    tags: dict[str, str] = {}
    timeouts: Timeouts | None = None
    # Limits on the model as a whole, shared by every caller.
    limits: LimitSpec = NO_LIMITS
    pricing: Pricing | None = None
    # Strategy, retries, health: merged field by field over routing.defaults.
    routing: ModelRoutingSpec | None = None
    # Other models to try, in order, when this one cannot answer (docs/routing.md).
    fallbacks: list[FallbackSpec] = []
    # Required unless the model has versions; [] when every deployment comes from the
    # admin API or engine registration (docs/routing.md#registration).
    deployments: list[DeploymentSpec] = []
    # Versions (``name@version``), each with its own deployments; see docs/routing.md#versions.
    versions: list[VersionSpec] = []
    default_version: str | None = None
    rollout: RolloutSpec | None = None

    @model_validator(mode="after")
    def _unique_deployments(self) -> ModelSpec:
        for deployments in (self.deployments, *(v.deployments for v in self.versions)):
            names = [d.name for d in deployments]
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise ValueError(f"deployment names must be unique: {', '.join(duplicates)}")
        check_versions(self, has_deployments="deployments" in self.model_fields_set)
        return self


class ServerSpec(Strict):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    workers: Annotated[int, Field(ge=1, le=256)] = 1
    max_body_bytes: Annotated[int, Field(ge=1024)] = 10 * 1024 * 1024
    max_response_bytes: Annotated[int, Field(ge=1024)] = 64 * 1024 * 1024
    drain_timeout_s: Annotated[float, Field(ge=0)] = 30.0
    idle_timeout_s: Annotated[float, Field(gt=0)] = 60.0
    # The admin API (/admin/v1) listens here, on server.host; None: not served.
    admin_port: Annotated[int, Field(ge=0, le=65535)] | None = None
    data_dir: str = "./lockgate-data"
    log_level: str = "info"

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        if value.lower() not in ("debug", "info", "warning", "error"):
            raise ValueError("must be one of debug, info, warning, error")
        return value.lower()


class ClaimMapping(Strict):
    """Where a JWT carries tenancy: claim names, configurable per issuer."""

    subject: str = "sub"
    organization: str = "org_id"
    project: str = "project_id"
    roles: str = "roles"


class JwtIssuerSpec(Strict):
    """An OAuth2/OIDC issuer whose bearer JWTs the gateway accepts."""

    issuer: str
    audiences: Annotated[list[str], Field(min_length=1)]
    jwks_url: str | None = None
    jwks_file: str | None = None  # static keys (a JWKS JSON document) for air-gapped sites
    algorithms: Annotated[list[str], Field(min_length=1)] = ["RS256", "ES256"]
    leeway_s: Annotated[float, Field(ge=0, le=300)] = 30.0
    jwks_cache_s: Annotated[float, Field(gt=0)] = 300.0
    claims: ClaimMapping = ClaimMapping()

    @model_validator(mode="after")
    def _keys_and_algorithms(self) -> JwtIssuerSpec:
        if (self.jwks_url is None) == (self.jwks_file is None):
            raise ValueError("give exactly one of 'jwks_url' or 'jwks_file'")
        allowed = {
            "RS256",
            "RS384",
            "RS512",
            "PS256",
            "PS384",
            "PS512",
            "ES256",
            "ES384",
            "ES512",
            "EdDSA",
        }
        refused = [a for a in self.algorithms if a not in allowed]
        if refused:
            # 'none' and HMAC algorithms are refused: a shared secret is not an identity provider.
            raise ValueError(f"algorithms not allowed: {', '.join(refused)}")
        return self


class AuthSpec(Strict):
    # Serve /v1 without credentials (demos, trusted sidecars). Off by default.
    allow_anonymous: bool = False
    # Server pepper for API key hashes; default: env LOCKGATE_API_KEY_PEPPER, or
    # in embedded mode a generated file in the data directory.
    api_key_pepper: SecretRef | None = None
    key_cache_ttl_s: Annotated[float, Field(gt=0, le=3600)] = 60.0
    jwt_issuers: list[JwtIssuerSpec] = []


class DatabaseSpec(Strict):
    # None: embedded SQLite file in server.data_dir. postgresql://… for scale-out.
    url: str | None = None


class RedisSpec(Strict):
    # Shared state for scale-out (invalidation, limits). None: embedded mode.
    url: str | None = None
    # Prefix of every key Lockgate writes, so several gateways (or tests) can share a server.
    key_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9._:-]{1,64}$")] = "lockgate:"


class ScopeDefaults(Strict):
    """Limits for records that set none of their own (field by field)."""

    key: LimitSpec = NO_LIMITS
    project: LimitSpec = NO_LIMITS
    organization: LimitSpec = NO_LIMITS


class BlockList(Strict):
    """Refused before any limit is consulted (abuse prevention)."""

    key_ids: list[str] = []
    project_ids: list[str] = []
    organization_ids: list[str] = []
    cidrs: list[str] = []

    @field_validator("cidrs")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for cidr in value:
            try:
                ip_network(cidr, strict=False)
            except ValueError as exc:
                raise ValueError(f"{cidr!r} is not an IP network: {exc}") from None
        return value


class QueueSpec(Strict):
    """The wait in front of a saturated model (deployments with ``capacity``)."""

    max_queue: Annotated[int, Field(ge=0)] = 1000
    max_queue_per_tenant: Annotated[int, Field(ge=1)] | None = None
    max_wait_s: Annotated[float, Field(gt=0)] = 30.0


class AdmissionSpec(Strict):
    # Off: no limits, caps or queueing at all (benchmarks, trusted single tenants).
    enabled: bool = True
    defaults: ScopeDefaults = ScopeDefaults()
    # When Redis cannot answer in time, per limit unless the limit says otherwise.
    on_backend_failure: FailurePolicy = "open"
    backend_timeout_ms: Annotated[float, Field(gt=0, le=10000)] = 250.0
    # Output tokens reserved for a request that does not set max_tokens.
    default_max_output_tokens: Annotated[int, Field(ge=1)] = 1024
    # Also send the IETF RateLimit-Policy / RateLimit fields (draft, so opt-in).
    ietf_headers: bool = False
    block: BlockList = BlockList()
    queue: QueueSpec = QueueSpec()


class GatewaySpec(Strict):
    server: ServerSpec = ServerSpec()
    database: DatabaseSpec = DatabaseSpec()
    redis: RedisSpec = RedisSpec()
    auth: AuthSpec = AuthSpec()
    timeouts: Timeouts = Timeouts()
    admission: AdmissionSpec = AdmissionSpec()
    routing: RoutingSpec = RoutingSpec()
    observability: ObservabilitySpec = ObservabilitySpec()
    metering: MeteringSpec = MeteringSpec()
    models: list[ModelSpec] = []

    @model_validator(mode="after")
    def _unique_names(self) -> GatewaySpec:
        seen: dict[str, str] = {}
        for model in self.models:
            for name in (model.name, *model.aliases):
                if name in seen:
                    raise ValueError(
                        f"model name or alias {name!r} is used by both {seen[name]!r} "
                        f"and {model.name!r}"
                    )
                seen[name] = model.name
        return self

    @model_validator(mode="after")
    def _fallbacks_exist(self) -> GatewaySpec:
        names = {name: m.name for m in self.models for name in (m.name, *m.aliases)}
        for model in self.models:
            for fallback in model.fallbacks:
                target = names.get(fallback.model)
                if target is None:
                    raise ValueError(
                        f"model {model.name!r} falls back to {fallback.model!r}, "
                        "which is not a model name or alias"
                    )
                if target == model.name:
                    raise ValueError(f"model {model.name!r} cannot fall back to itself")
        return self

    @model_validator(mode="after")
    def _replacements_exist(self) -> GatewaySpec:
        check_replacements(self.models)
        return self

    @model_validator(mode="after")
    def _required_models_exist(self) -> GatewaySpec:
        required = self.observability.readiness.required_models or []
        names = {m.name for m in self.models}
        unknown = sorted(set(required) - names)
        if unknown:
            raise ValueError(
                f"observability.readiness.required_models names {', '.join(map(repr, unknown))}, "
                "which is not a model name (aliases are not accepted here)"
            )
        return self
