"""What an operator may say about a model's lifecycle: versions, rollouts, registration.

Typed config sections (unknown keys rejected). ``lockgate.config.spec`` embeds
them: ``VersionLifecycleSpec`` is the part of ``models[].versions[]`` that is
not deployments, ``RolloutSpec`` is ``models[].rollout``, ``RegistrationSpec``
is ``routing.registration``. See docs/routing.md (versions, rollouts,
registration) for how they behave.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

VersionStatus = Literal["active", "deprecated", "retired"]
StickySource = Literal["header", "user", "key"]
# A version is written after the model name as ``name@version``; model names cannot
# contain '@', so the split is unambiguous.
VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_HEADER = r"^[a-z0-9-]{1,64}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VersionLifecycleSpec(_Strict):
    """One version's name and lifecycle (its deployments are ``config.spec.VersionSpec``'s).

    ``deprecated``: still served, every answer carries ``Deprecation`` (RFC 9745, the
    date of ``deprecated_at``) and, with ``sunset_at``, ``Sunset`` (RFC 8594).
    ``retired`` — or any version once ``sunset_at`` has passed — answers 410
    ``model_retired``, naming ``replacement`` when there is one.
    """

    version: Annotated[str, Field(pattern=VERSION_PATTERN)]
    status: VersionStatus = "active"
    deprecated_at: datetime | None = None
    sunset_at: datetime | None = None
    # The model (``name`` or ``name@version``) clients should move to.
    replacement: str | None = None
    # Where humans read about the deprecation: sent as Link rel="deprecation".
    info_url: Annotated[str, Field(pattern=r"^https?://\S+$")] | None = None

    @field_validator("deprecated_at", "sunset_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("give a time zone (e.g. 2026-06-30T00:00:00Z)")
        return value

    @model_validator(mode="after")
    def _dated(self) -> VersionLifecycleSpec:
        if self.status == "deprecated" and self.deprecated_at is None:
            raise ValueError(
                "a deprecated version needs 'deprecated_at' (the Deprecation header's date)"
            )
        return self


class ShadowSpec(_Strict):
    """Copies of ``percent`` % of the stable version's requests go to the candidate too.

    In the background, at most ``max_concurrency`` at a time per worker (beyond that a
    copy is skipped, never queued); answers are recorded, never returned.
    """

    percent: Annotated[float, Field(ge=0, le=100)] = 0.0
    max_concurrency: Annotated[int, Field(ge=1, le=1000)] = 4
    timeout_s: Annotated[float, Field(gt=0, le=600)] = 60.0


class RollbackSpec(_Strict):
    """When the candidate is judged broken: over its last ``window_s`` (at least
    ``min_samples`` requests, per worker), errors reach ``max_error_ratio`` or the
    share of requests slower than ``max_latency_ms`` reaches ``max_slow_ratio``."""

    enabled: bool = True
    window_s: Annotated[float, Field(gt=0, le=3600)] = 60.0
    min_samples: Annotated[int, Field(ge=1, le=100_000)] = 20
    max_error_ratio: Annotated[float, Field(gt=0, le=1)] = 0.2
    max_latency_ms: Annotated[float, Field(gt=0)] | None = None
    max_slow_ratio: Annotated[float, Field(gt=0, le=1)] = 0.1


class RolloutSpec(_Strict):
    """``percent`` % of the model's unpinned traffic goes to version ``candidate``.

    Sticky: the first present of ``sticky`` — the ``header`` (a session id), the
    body's ``user``, the caller's ``key`` — is hashed into one of 10,000 buckets,
    so a caller stays on one version, and raising the percentage only moves more
    buckets over. The admin API changes it live (docs/routing.md#rollouts).
    """

    candidate: Annotated[str, Field(pattern=VERSION_PATTERN)]
    percent: Annotated[float, Field(ge=0, le=100)] = 0.0
    sticky: Annotated[tuple[StickySource, ...], Field(min_length=1)] = ("header", "user", "key")
    header: Annotated[str, Field(pattern=_HEADER)] = "x-session-id"
    shadow: ShadowSpec | None = None
    rollback: RollbackSpec = RollbackSpec()

    @field_validator("header", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


class RegistrationSpec(_Strict):
    """Deployments that engines register themselves, kept alive by heartbeats.

    A registration not renewed for ``expire_after_s`` is gone: every worker drops it
    on its own at that time (no janitor). ``heartbeat_interval_s`` is what engines are
    told to use; ``refresh_s`` is how often each worker re-reads the registry anyway,
    in case an announcement was lost.
    """

    heartbeat_interval_s: Annotated[float, Field(gt=0, le=3600)] = 10.0
    expire_after_s: Annotated[float, Field(gt=0, le=86_400)] = 30.0
    refresh_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    # Networks engines' base URLs may point at (empty: anywhere). Registration hands
    # a credential holder traffic; this keeps it on the engines' own network.
    allowed_networks: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _expiry_after_heartbeat(self) -> RegistrationSpec:
        if self.expire_after_s <= self.heartbeat_interval_s:
            raise ValueError("'expire_after_s' must exceed 'heartbeat_interval_s'")
        return self

    @field_validator("allowed_networks")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from ipaddress import ip_network

        for cidr in value:
            try:
                ip_network(cidr, strict=False)
            except ValueError as exc:
                raise ValueError(f"{cidr!r} is not an IP network: {exc}") from None
        return value


class _ModelLike(Protocol):
    """What the checks below read of ``config.spec.ModelSpec`` (defined there: it holds
    deployments, which this module does not know)."""

    @property
    def name(self) -> str: ...
    @property
    def aliases(self) -> Sequence[str]: ...
    @property
    def versions(self) -> Sequence[VersionLifecycleSpec]: ...
    @property
    def default_version(self) -> str | None: ...
    @property
    def rollout(self) -> RolloutSpec | None: ...


def check_versions(model: _ModelLike, *, has_deployments: bool) -> None:
    """A model's versions hang together; raises ValueError (pydantic reports it).

    Either ``deployments`` (no versions: the model as before) or ``versions``; the
    default and the rollout's candidate are versions that are not retired.
    """
    versions = {v.version: v for v in model.versions}
    if not versions:
        if not has_deployments:
            raise ValueError(
                "give 'deployments' (an empty list if engines register themselves) or 'versions'"
            )
        if model.default_version is not None or model.rollout is not None:
            raise ValueError("'default_version' and 'rollout' need 'versions'")
        return
    if has_deployments:
        raise ValueError("give 'deployments' per version, not beside 'versions'")
    if len(versions) != len(model.versions):
        raise ValueError("version names must be unique")
    default = model.default_version or model.versions[0].version
    if default not in versions:
        raise ValueError(f"default_version {default!r} is not one of the versions")
    if versions[default].status == "retired":
        raise ValueError(f"the default version {default!r} is retired")
    rollout = model.rollout
    if rollout is not None:
        candidate = versions.get(rollout.candidate)
        if candidate is None:
            raise ValueError(f"rollout candidate {rollout.candidate!r} is not one of the versions")
        if rollout.candidate == default:
            raise ValueError("the rollout candidate is the default version already")
        if candidate.status == "retired":
            raise ValueError(f"the rollout candidate {rollout.candidate!r} is retired")


def check_replacements(models: Sequence[_ModelLike]) -> None:
    """Every ``replacement`` names a model, alias or ``name@version`` that exists."""
    known: set[str] = set()
    for model in models:
        for name in (model.name, *model.aliases):
            known.add(name)
            known.update(f"{name}@{v.version}" for v in model.versions)
    for model in models:
        for version in model.versions:
            if version.replacement is not None and version.replacement not in known:
                raise ValueError(
                    f"{model.name}@{version.version}: replacement {version.replacement!r} "
                    "is not a model, alias or name@version"
                )
