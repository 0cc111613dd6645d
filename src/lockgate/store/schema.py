"""The tables, as SQLAlchemy Core ``Table``s.

Core rather than the ORM: the records callers get are the frozen dataclasses of
``lockgate.tenancy.model`` (slots, no instrumentation), so an ORM layer would be a
second, mutable copy of every type plus a unit of work and lazy loading we do not
want on an asyncio hot path. With Core each repository method is one visible
statement, and rows map to records in one small function.

Rules the schema itself enforces, whatever the caller does:
- Tenant consistency: an API key's project (and service account) must belong to
  the key's organisation — composite foreign keys on ``(organization_id, id)``.
- Deleting never silently removes credentials: organisations, projects and
  service accounts that are still referred to cannot be deleted (RESTRICT →
  ``Conflict``). Only role bindings cascade, which can only remove access.
- Uniqueness that holds for "no organisation" too: SQL treats NULLs as distinct,
  so deployment-wide users and secrets get partial unique indexes, and role
  bindings a unique index over ``coalesce(…, '')``.
- The audit log has no foreign keys: entries outlive what they describe; nor do
  idempotency records, which expire on their own after a day.

Free text is ``Text`` on both backends (length limits are the admin API's to
validate; VARCHAR(n) would be enforced by PostgreSQL only). The migration in
``migrations/versions`` must match this module; ``tests/store`` checks it.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Double,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    false,
    func,
    text,
)

from lockgate.store.columns import UtcDateTime, json_column
from lockgate.tenancy.model import KeyStatus, PrincipalKind, Role

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _one_of(column: str, values: type[KeyStatus | Role]) -> str:
    return f"{column} IN ({', '.join(repr(v.value) for v in values)})"


organizations = Table(
    "organizations",
    metadata,
    Column("id", Text, primary_key=True),
    Column("name", Text, nullable=False, unique=True),
    Column("metadata", json_column(), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    # The organisation's model ceiling (projects stay within it; empty: any) (0003).
    Column("allowed_models", json_column(), nullable=False, server_default=text("'[]'")),
    # A ``LimitSpec`` as JSON (0003).
    Column("limits", json_column(), nullable=False, server_default=text("'{}'")),
)

projects = Table(
    "projects",
    metadata,
    Column("id", Text, primary_key=True),
    Column(
        "organization_id",
        Text,
        ForeignKey("organizations.id", ondelete="RESTRICT"),
        nullable=False,
    ),
    Column("name", Text, nullable=False),
    Column("allowed_models", json_column(), nullable=False),
    Column("metadata", json_column(), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("limits", json_column(), nullable=False, server_default=text("'{}'")),  # 0003
    # Model name -> ``LimitSpec`` for this project's use of that model (0003).
    Column("model_limits", json_column(), nullable=False, server_default=text("'{}'")),
    # The project's prompts may appear, redacted, in the access log (0009).
    Column("log_prompts", Boolean, nullable=False, server_default=false()),
    UniqueConstraint("organization_id", "name"),
    # The target of composite foreign keys, and the index for listing by org.
    UniqueConstraint("organization_id", "id"),
)

users = Table(
    "users",
    metadata,
    Column("id", Text, primary_key=True),
    Column(
        "organization_id",
        Text,
        ForeignKey("organizations.id", ondelete="RESTRICT"),
        nullable=True,
    ),
    Column("email", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("is_disabled", Boolean, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    UniqueConstraint("organization_id", "email"),
    Index(
        "uq_users_email_deployment",
        "email",
        unique=True,
        sqlite_where=text("organization_id IS NULL"),
        postgresql_where=text("organization_id IS NULL"),
    ),
)

service_accounts = Table(
    "service_accounts",
    metadata,
    Column("id", Text, primary_key=True),
    Column(
        "organization_id",
        Text,
        ForeignKey("organizations.id", ondelete="RESTRICT"),
        nullable=False,
    ),
    Column("name", Text, nullable=False),
    Column("is_disabled", Boolean, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    UniqueConstraint("organization_id", "name"),
    UniqueConstraint("organization_id", "id"),
)

role_bindings = Table(
    "role_bindings",
    metadata,
    Column("id", Text, primary_key=True),
    Column("subject_kind", Text, nullable=False),
    Column("subject_id", Text, nullable=False),
    Column("role", Text, nullable=False),
    Column(
        "organization_id",
        Text,
        ForeignKey("organizations.id", ondelete="CASCADE"),
        nullable=True,
    ),
    Column("project_id", Text, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    ForeignKeyConstraint(
        ["organization_id", "project_id"],
        ["projects.organization_id", "projects.id"],
        ondelete="CASCADE",
    ),
    # API keys hold no roles of their own: they act for a service account or a project.
    CheckConstraint(
        f"subject_kind IN ('{PrincipalKind.USER}', '{PrincipalKind.SERVICE_ACCOUNT}')",
        name="subject_kind",
    ),
    CheckConstraint(_one_of("role", Role), name="role"),
    # Superadmin is deployment-wide; every other role lives in an organisation.
    CheckConstraint("(role = 'superadmin') = (organization_id IS NULL)", name="role_scope"),
    CheckConstraint("project_id IS NULL OR organization_id IS NOT NULL", name="project_scope"),
    Index(
        "uq_role_bindings_grant",
        "subject_kind",
        "subject_id",
        "role",
        func.coalesce(text("organization_id"), ""),
        func.coalesce(text("project_id"), ""),
        unique=True,
    ),
    Index("ix_role_bindings_organization_id_id", "organization_id", "id"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Text, primary_key=True),  # the public key id, chosen by the caller
    Column("organization_id", Text, nullable=False),
    Column("project_id", Text, nullable=False),
    Column("service_account_id", Text, nullable=True),
    Column("name", Text, nullable=False),
    Column("secret_hash", LargeBinary, nullable=False),
    Column("previous_secret_hash", LargeBinary, nullable=True),
    Column("previous_expires_at", UtcDateTime, nullable=True),
    Column("status", Text, nullable=False),
    Column("scopes", json_column(), nullable=False),
    Column("allowed_models", json_column(), nullable=False),
    Column("allowed_cidrs", json_column(), nullable=False),
    # ABAC: the key may call only models carrying all these tags (0002).
    Column("required_model_tags", json_column(), nullable=False, server_default=text("'{}'")),
    Column("metadata", json_column(), nullable=False),
    Column("expires_at", UtcDateTime, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=True),
    Column("limits", json_column(), nullable=False, server_default=text("'{}'")),  # 0003
    ForeignKeyConstraint(
        ["organization_id", "project_id"],
        ["projects.organization_id", "projects.id"],
        ondelete="RESTRICT",
    ),
    ForeignKeyConstraint(
        ["organization_id", "service_account_id"],
        ["service_accounts.organization_id", "service_accounts.id"],
        ondelete="RESTRICT",
    ),
    CheckConstraint(_one_of("status", KeyStatus), name="status"),
    Index("ix_api_keys_organization_id_id", "organization_id", "id"),
    Index("ix_api_keys_organization_id_project_id_id", "organization_id", "project_id", "id"),
)

audit_log = Table(
    "audit_log",
    metadata,
    # Assigned by the appender (head + 1), never by the database: gaps would read as deletions.
    Column(
        "seq",
        BigInteger().with_variant(Integer, "sqlite"),
        primary_key=True,
        autoincrement=False,
    ),
    Column("at", UtcDateTime, nullable=False),
    Column("actor", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("target_type", Text, nullable=False),
    Column("target_id", Text, nullable=False),
    Column("organization_id", Text, nullable=True),
    Column("before", json_column(), nullable=True),
    Column("after", json_column(), nullable=True),
    Column("source_ip", Text, nullable=True),
    Column("request_id", Text, nullable=True),
    Column("prev_hash", Text, nullable=False),
    Column("entry_hash", Text, nullable=False, unique=True),
    Index("ix_audit_log_organization_id_at", "organization_id", "at"),
    Index("ix_audit_log_organization_id_seq", "organization_id", "seq"),
)

upstream_secrets = Table(
    "upstream_secrets",
    metadata,
    Column("id", Text, primary_key=True),
    Column(
        "organization_id",
        Text,
        ForeignKey("organizations.id", ondelete="RESTRICT"),
        nullable=True,
    ),
    Column("name", Text, nullable=False),
    Column("ciphertext", LargeBinary, nullable=False),
    Column("key_version", Integer, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    UniqueConstraint("organization_id", "name"),
    Index(
        "uq_upstream_secrets_name_deployment",
        "name",
        unique=True,
        sqlite_where=text("organization_id IS NULL"),
        postgresql_where=text("organization_id IS NULL"),
    ),
)

# One row per (principal, Idempotency-Key) for 24 hours: the fingerprint of the request
# and its response, encrypted (it holds a key's secret), so a retry replays it (0003).
idempotency_records = Table(
    "idempotency_records",
    metadata,
    Column("principal", Text, primary_key=True),
    Column("idempotency_key", Text, primary_key=True),
    Column("request_hash", Text, nullable=False),
    Column("organization_id", Text, nullable=True),
    Column("response", LargeBinary, nullable=True),  # None: no master key to seal it with
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Index("ix_idempotency_records_expires_at", "expires_at"),
)

# The usage ledger (0004): one row per request, written by the metering flusher.
# ``record_id`` is the idempotency key (a re-sent journal entry is skipped, never
# counted twice); no foreign keys, as in the audit log: billing history outlives
# the keys, projects and organisations it names. Costs are integer micro-units.
usage_records = Table(
    "usage_records",
    metadata,
    Column("record_id", Text, primary_key=True),
    Column("request_id", Text, nullable=False),
    Column("occurred_at", UtcDateTime, nullable=False),
    Column("organization_id", Text, nullable=True),
    Column("project_id", Text, nullable=True),
    Column("api_key_id", Text, nullable=True),
    Column("principal", Text, nullable=False),
    Column("operation", Text, nullable=False),
    Column("model", Text, nullable=False),
    Column("upstream_model", Text, nullable=True),
    Column("deployment", Text, nullable=True),
    Column("prompt_tokens", BigInteger, nullable=False),
    Column("completion_tokens", BigInteger, nullable=False),
    Column("cached_tokens", BigInteger, nullable=False),
    Column("reasoning_tokens", BigInteger, nullable=False),
    Column("is_estimated", Boolean, nullable=False),
    Column("status", Integer, nullable=False),
    Column("error_code", Text, nullable=True),
    Column("error_source", Text, nullable=True),
    Column("ttft_ms", Double, nullable=True),
    Column("total_ms", Double, nullable=True),
    Column("is_stream", Boolean, nullable=False),
    Column("is_client_disconnected", Boolean, nullable=False),
    Column("price_id", Text, nullable=True),
    Column("currency", Text, nullable=True),
    Column("cost_micros", BigInteger, nullable=False),
    # Reports read one organisation's time range (or, deployment-wide, all of one).
    Index("ix_usage_records_organization_id_occurred_at", "organization_id", "occurred_at"),
    Index("ix_usage_records_occurred_at", "occurred_at"),
)

# More tables, in modules of their own, imported last so they join ``metadata``
# wherever the schema is imported (one import statement, so isort keeps it sorted):
# usage reporting (0005): roll-ups, admin-set prices, the push queue; budgets, webhooks
# and background leases (0006); request debugging: debug sessions and captured request
# detail (0008); runtime deployments and rollouts (0007).
from lockgate.store import (  # noqa: E402, F401
    schema_billing,
    schema_debugging,
    schema_registry,
    schema_reporting,
)
