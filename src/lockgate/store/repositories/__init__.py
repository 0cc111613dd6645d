"""One small module per kind of record; each repository runs its statements in the
``Connector`` it was given (its own transaction, or the caller's)."""

from lockgate.store.repositories.api_keys import ApiKeys
from lockgate.store.repositories.audit import AuditLog
from lockgate.store.repositories.idempotency import IdempotencyRecord, IdempotencyRecords
from lockgate.store.repositories.organizations import Organizations
from lockgate.store.repositories.principals import ServiceAccounts, Users
from lockgate.store.repositories.projects import Projects
from lockgate.store.repositories.role_bindings import RoleBindings
from lockgate.store.repositories.upstream_secrets import (
    UpstreamSecret,
    UpstreamSecretInfo,
    UpstreamSecrets,
)
from lockgate.store.repositories.usage import UsageRecords

__all__ = [
    "ApiKeys",
    "AuditLog",
    "IdempotencyRecord",
    "IdempotencyRecords",
    "Organizations",
    "Projects",
    "RoleBindings",
    "ServiceAccounts",
    "UpstreamSecret",
    "UpstreamSecretInfo",
    "UpstreamSecrets",
    "UsageRecords",
    "Users",
]
