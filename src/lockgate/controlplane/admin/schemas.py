"""Typed request and response bodies of the admin API (documented in its OpenAPI).

Request bodies reject unknown fields (a misspelt field is an error, not a
silent no-op). In a PATCH body a field left out (or null) stays as it is;
lists and maps given replace the stored ones whole.
"""

from __future__ import annotations

from datetime import datetime
from ipaddress import ip_network
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr

from lockgate.admission.spec import LimitSpec
from lockgate.tenancy.model import PrincipalKind, Role, Scope

T = TypeVar("T")
Name = Annotated[str, Field(min_length=1, max_length=200)]
ModelName = Annotated[str, Field(min_length=1, max_length=200)]
ModelList = Annotated[list[ModelName], Field(max_length=1000)]
Metadata = Annotated[dict[str, Any], Field(max_length=100)]
Email = Annotated[
    str, Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$", examples=["a@b.org"])
]


def _canonical_cidrs(values: list[str]) -> list[str]:
    """Each network in canonical form; an invalid one would fail every request later."""
    networks = []
    for value in values:
        try:
            networks.append(str(ip_network(value, strict=False)))
        except ValueError:
            raise ValueError(f"{value!r} is not an IP network (e.g. 10.0.0.0/8)") from None
    return networks


Cidrs = Annotated[list[str], Field(max_length=100), AfterValidator(_canonical_cidrs)]
ModelTags = Annotated[dict[Annotated[str, Field(min_length=1)], str], Field(max_length=50)]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Page(BaseModel, Generic[T]):
    object: Literal["list"] = "list"
    data: list[T]
    has_more: bool
    last_id: str | None


# -- organisations and projects -------------------------------------------------
class OrganizationIn(Body):
    name: Name
    allowed_models: ModelList = []  # the ceiling for its projects; empty: any model
    limits: LimitSpec = LimitSpec()
    metadata: Metadata = {}


class OrganizationPatch(Body):
    """``allowed_models`` and ``limits`` need ``org.policy`` (superadmin)."""

    name: Name | None = None
    allowed_models: ModelList | None = None
    limits: LimitSpec | None = None
    metadata: Metadata | None = None


class OrganizationOut(BaseModel):
    id: str
    name: str
    allowed_models: list[str]
    limits: LimitSpec
    metadata: dict[str, Any]
    created_at: datetime


class DeletedOrganizationOut(OrganizationOut):
    deleted_project_ids: list[str]
    deleted_api_key_ids: list[str]


class ProjectIn(Body):
    name: Name
    allowed_models: ModelList = []  # within the organisation's; empty: what it allows
    limits: LimitSpec = LimitSpec()
    model_limits: dict[ModelName, LimitSpec] = {}
    # The project's prompts in the access log, redacted (needs project.policy).
    log_prompts: bool = False


class ProjectPatch(Body):
    """``allowed_models``, ``limits``, ``model_limits`` and ``log_prompts`` need
    ``project.policy``."""

    name: Name | None = None
    allowed_models: ModelList | None = None
    limits: LimitSpec | None = None
    model_limits: dict[ModelName, LimitSpec] | None = None
    log_prompts: bool | None = None


class ProjectOut(BaseModel):
    id: str
    organization_id: str
    name: str
    allowed_models: list[str]
    limits: LimitSpec
    model_limits: dict[str, LimitSpec]
    log_prompts: bool
    created_at: datetime


class DeletedProjectOut(ProjectOut):
    """The deleted project, and the keys deleted with it (none of them works any more)."""

    deleted_api_key_ids: list[str]


# -- principals -----------------------------------------------------------------
class UserIn(Body):
    email: Email
    name: Name


class UserPatch(Body):
    name: Name | None = None
    is_disabled: bool | None = None


class UserOut(BaseModel):
    id: str
    organization_id: str | None
    email: str
    name: str
    is_disabled: bool
    created_at: datetime


class ServiceAccountIn(Body):
    name: Name


class ServiceAccountPatch(Body):
    """Disabling stops every key acting for the account, on both planes, at once."""

    name: Name | None = None
    is_disabled: bool | None = None


class ServiceAccountOut(BaseModel):
    id: str
    organization_id: str
    name: str
    is_disabled: bool
    created_at: datetime


class DeletedServiceAccountOut(ServiceAccountOut):
    revoked_api_key_ids: list[str]


class RoleBindingIn(Body):
    subject_kind: PrincipalKind = PrincipalKind.SERVICE_ACCOUNT
    subject_id: str
    role: Role = Role.MEMBER  # least privilege by default
    project_id: str | None = None


class RoleBindingOut(BaseModel):
    id: str
    subject_kind: PrincipalKind
    subject_id: str
    role: Role
    organization_id: str | None
    project_id: str | None
    created_at: datetime


# -- API keys ------------------------------------------------------------------
class ApiKeyIn(Body):
    name: Name
    scopes: list[Scope] = [Scope.INFERENCE]
    allowed_models: ModelList = []  # within the project's; empty: what the project allows
    allowed_cidrs: Cidrs = []
    required_model_tags: ModelTags = {}
    expires_at: datetime | None = None
    service_account_id: str | None = None
    limits: LimitSpec = LimitSpec()
    metadata: Metadata = {}


class ApiKeyPatch(Body):
    """Applies to every replica at once; ``expires_at: null`` removes the expiry."""

    name: Name | None = None
    scopes: list[Scope] | None = None
    allowed_models: ModelList | None = None
    allowed_cidrs: Cidrs | None = None
    required_model_tags: ModelTags | None = None
    expires_at: datetime | None = None
    limits: LimitSpec | None = None
    metadata: Metadata | None = None


class ApiKeyOut(BaseModel):
    """A key as listings show it: never a secret or a hash."""

    id: str
    prefix: str
    name: str
    organization_id: str
    project_id: str
    status: str
    scopes: list[str]
    allowed_models: list[str]
    allowed_cidrs: list[str]
    required_model_tags: dict[str, str]
    limits: LimitSpec
    metadata: dict[str, Any]
    expires_at: str | None
    previous_expires_at: str | None
    service_account_id: str | None
    created_at: str


class ApiKeyCreated(ApiKeyOut):
    """Returned once, at creation or rotation: ``key`` is never shown again (except to
    a retry with the same Idempotency-Key within 24 hours)."""

    key: str


class RotateIn(Body):
    grace_s: Annotated[float, Field(ge=0, le=30 * 86400)] = 86400.0


# -- upstream secrets ------------------------------------------------------------
class UpstreamSecretIn(Body):
    """The credential itself; stored encrypted, never returned or logged."""

    value: Annotated[SecretStr, Field(min_length=1, max_length=16384)]


class UpstreamSecretOut(BaseModel):
    """What is shown of a secret: its name and when it was set, never its value."""

    id: str
    name: str
    key_version: int
    created_at: datetime
    updated_at: datetime


# -- audit -----------------------------------------------------------------------
class AuditEntryOut(BaseModel):
    seq: int
    at: datetime
    actor: str
    action: str
    target_type: str
    target_id: str
    organization_id: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    source_ip: str | None
    request_id: str | None
    prev_hash: str
    entry_hash: str


class AuditVerifyOut(BaseModel):
    intact: bool
    entries: int
    first_broken_seq: int | None
