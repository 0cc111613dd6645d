"""The tenancy vocabulary shared by the store, the admin API and the data plane.

Organisation → projects → API keys. Users and service accounts belong to an
organisation and hold roles through role bindings, scoped to the organisation
or to one project. Records are immutable snapshots; the store creates them.

Limits (``LimitSpec``) sit on the organisation, the project (also per model)
and the key; a request must pass all of them. Model allow-lists narrow the
same way: organisation (the ceiling) ⊇ project ⊇ key, empty meaning "no
restriction at this level".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from lockgate.admission.spec import NO_LIMITS, LimitSpec


class Role(StrEnum):
    """Least privilege first: a new binding defaults to ``MEMBER``."""

    SUPERADMIN = "superadmin"  # the whole deployment; bound without an organisation
    ORG_OWNER = "org_owner"
    ORG_ADMIN = "org_admin"
    PROJECT_ADMIN = "project_admin"
    MEMBER = "member"  # may call models
    VIEWER = "viewer"  # read-only usage
    AUDITOR = "auditor"  # reads the audit log
    ENGINE = "engine"  # an inference engine's service account: registers its deployments


class Scope(StrEnum):
    """API surfaces an API key may be used on."""

    INFERENCE = "inference"  # /v1 data plane
    ADMIN = "admin"  # /admin/v1 control plane (further limited by roles)


class KeyStatus(StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"
    REVOKED = "revoked"


class PrincipalKind(StrEnum):
    USER = "user"
    SERVICE_ACCOUNT = "service_account"
    API_KEY = "api_key"


@dataclass(frozen=True, slots=True)
class Organization:
    id: str
    name: str
    created_at: datetime
    metadata: dict[str, Any] = field(default_factory=dict)
    # The ceiling: the organisation's projects may call only these; empty means any.
    allowed_models: tuple[str, ...] = ()
    limits: LimitSpec = NO_LIMITS


@dataclass(frozen=True, slots=True)
class Project:
    id: str
    organization_id: str
    name: str
    created_at: datetime
    # Public model names this project may call; empty means every model.
    allowed_models: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)
    limits: LimitSpec = NO_LIMITS
    # Limits on this project's use of one model (model name -> limits).
    model_limits: dict[str, LimitSpec] = field(default_factory=dict)
    # Opt-in: the project's prompts appear, redacted, in the access log.
    log_prompts: bool = False


@dataclass(frozen=True, slots=True)
class User:
    id: str
    organization_id: str | None  # None only for deployment superadmins
    email: str
    name: str
    created_at: datetime
    is_disabled: bool = False


@dataclass(frozen=True, slots=True)
class ServiceAccount:
    id: str
    organization_id: str
    name: str
    created_at: datetime
    is_disabled: bool = False


@dataclass(frozen=True, slots=True)
class RoleBinding:
    id: str
    subject_kind: PrincipalKind  # USER or SERVICE_ACCOUNT
    subject_id: str
    role: Role
    organization_id: str | None  # None for SUPERADMIN
    project_id: str | None  # set: the role applies to this project only
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """What the store keeps of an API key: never the secret, only its keyed hash.

    ``previous_secret_hash`` keeps working until ``previous_expires_at`` after
    a rotation, so clients can switch over without an outage.
    """

    id: str  # public key id, part of the key string
    organization_id: str
    project_id: str
    name: str
    secret_hash: bytes
    status: KeyStatus
    scopes: tuple[Scope, ...]
    allowed_models: tuple[str, ...]  # empty: whatever the project allows
    created_at: datetime
    expires_at: datetime | None = None
    previous_secret_hash: bytes | None = None
    previous_expires_at: datetime | None = None
    # A key may act for a service account (machine callers with narrow roles).
    service_account_id: str | None = None
    # ABAC: CIDR ranges the key may be used from; empty means anywhere.
    allowed_cidrs: tuple[str, ...] = ()
    # ABAC: the key may call only models whose tags include all of these.
    required_model_tags: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    updated_at: datetime | None = None
    limits: LimitSpec = NO_LIMITS


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One admin action. ``entry_hash`` chains it to ``prev_hash`` (tamper evidence)."""

    seq: int
    at: datetime
    actor: str  # "user:<id>", "service_account:<id>", "api_key:<id>", "system"
    action: str  # e.g. "api_key.create"
    target_type: str
    target_id: str
    organization_id: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    source_ip: str | None
    request_id: str | None
    prev_hash: str
    entry_hash: str
