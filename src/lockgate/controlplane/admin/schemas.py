"""Typed request and response bodies of the admin API (documented in its OpenAPI)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from lockgate.tenancy.model import PrincipalKind, Role, Scope

T = TypeVar("T")
Name = Annotated[str, Field(min_length=1, max_length=200)]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Page(BaseModel, Generic[T]):
    object: Literal["list"] = "list"
    data: list[T]
    has_more: bool
    last_id: str | None


class OrganizationIn(Body):
    name: Name


class OrganizationOut(BaseModel):
    id: str
    name: str
    created_at: datetime


class ProjectIn(Body):
    name: Name
    allowed_models: list[str] = []


class ProjectPatch(Body):
    name: Name | None = None
    allowed_models: list[str] | None = None


class ProjectOut(BaseModel):
    id: str
    organization_id: str
    name: str
    allowed_models: list[str]
    created_at: datetime


class ServiceAccountIn(Body):
    name: Name


class ServiceAccountOut(BaseModel):
    id: str
    organization_id: str
    name: str
    created_at: datetime


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


class ApiKeyIn(Body):
    name: Name
    scopes: list[Scope] = [Scope.INFERENCE]
    allowed_models: list[str] = []
    allowed_cidrs: list[str] = []
    required_model_tags: dict[str, str] = {}
    expires_at: datetime | None = None
    service_account_id: str | None = None


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
    expires_at: str | None
    previous_expires_at: str | None
    service_account_id: str | None
    created_at: str


class ApiKeyCreated(ApiKeyOut):
    """Returned once, at creation or rotation: ``key`` is never shown again."""

    key: str


class RotateIn(Body):
    grace_s: Annotated[float, Field(ge=0, le=30 * 86400)] = 86400.0


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
