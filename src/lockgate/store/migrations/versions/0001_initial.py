"""Initial schema: tenancy, API keys, audit log, upstream secrets.

Revision ID: 0001_initial
Revises:
Create Date: 2025-01-01

Written out in full rather than derived from ``schema.py``: a migration is a
frozen record of what was created, and must not change when the models do.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001_initial"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Aware UTC timestamps: timestamptz on PostgreSQL, fixed-width ISO text on SQLite.
_TIMESTAMP = sa.DateTime(timezone=True).with_variant(sa.String(32), "sqlite")
_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_DEPLOYMENT_WIDE = sa.text("organization_id IS NULL")


def upgrade() -> None:
    op.create_table(
        "organizations",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("created_at", _TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_organizations"),
        sa.UniqueConstraint("name", name="uq_organizations_name"),
    )
    op.create_table(
        "projects",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("organization_id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("allowed_models", sa.JSON(), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("created_at", _TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_projects"),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name="fk_projects_organization_id_organizations",
            ondelete="RESTRICT",
        ),
        sa.UniqueConstraint("organization_id", "name", name="uq_projects_organization_id_name"),
        sa.UniqueConstraint("organization_id", "id", name="uq_projects_organization_id_id"),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("organization_id", sa.Text(), nullable=True),
        sa.Column("email", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("is_disabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", _TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name="fk_users_organization_id_organizations",
            ondelete="RESTRICT",
        ),
        sa.UniqueConstraint("organization_id", "email", name="uq_users_organization_id_email"),
    )
    op.create_index(
        "uq_users_email_deployment",
        "users",
        ["email"],
        unique=True,
        sqlite_where=_DEPLOYMENT_WIDE,
        postgresql_where=_DEPLOYMENT_WIDE,
    )
    op.create_table(
        "service_accounts",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("organization_id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("is_disabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", _TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_service_accounts"),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name="fk_service_accounts_organization_id_organizations",
            ondelete="RESTRICT",
        ),
        sa.UniqueConstraint(
            "organization_id", "name", name="uq_service_accounts_organization_id_name"
        ),
        sa.UniqueConstraint("organization_id", "id", name="uq_service_accounts_organization_id_id"),
    )
    op.create_table(
        "role_bindings",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("subject_kind", sa.Text(), nullable=False),
        sa.Column("subject_id", sa.Text(), nullable=False),
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column("organization_id", sa.Text(), nullable=True),
        sa.Column("project_id", sa.Text(), nullable=True),
        sa.Column("created_at", _TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_role_bindings"),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name="fk_role_bindings_organization_id_organizations",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id", "project_id"],
            ["projects.organization_id", "projects.id"],
            name="fk_role_bindings_organization_id_project_id_projects",
            ondelete="CASCADE",
        ),
        sa.CheckConstraint(
            "subject_kind IN ('user', 'service_account')",
            name="ck_role_bindings_subject_kind",
        ),
        sa.CheckConstraint(
            "role IN ('superadmin', 'org_owner', 'org_admin', 'project_admin', "
            "'member', 'viewer', 'auditor')",
            name="ck_role_bindings_role",
        ),
        sa.CheckConstraint(
            "(role = 'superadmin') = (organization_id IS NULL)",
            name="ck_role_bindings_role_scope",
        ),
        sa.CheckConstraint(
            "project_id IS NULL OR organization_id IS NOT NULL",
            name="ck_role_bindings_project_scope",
        ),
    )
    op.create_index(
        "uq_role_bindings_grant",
        "role_bindings",
        [
            "subject_kind",
            "subject_id",
            "role",
            sa.text("coalesce(organization_id, '')"),
            sa.text("coalesce(project_id, '')"),
        ],
        unique=True,
    )
    op.create_index(
        "ix_role_bindings_organization_id_id", "role_bindings", ["organization_id", "id"]
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("organization_id", sa.Text(), nullable=False),
        sa.Column("project_id", sa.Text(), nullable=False),
        sa.Column("service_account_id", sa.Text(), nullable=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("secret_hash", sa.LargeBinary(), nullable=False),
        sa.Column("previous_secret_hash", sa.LargeBinary(), nullable=True),
        sa.Column("previous_expires_at", _TIMESTAMP, nullable=True),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("allowed_models", sa.JSON(), nullable=False),
        sa.Column("allowed_cidrs", sa.JSON(), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("expires_at", _TIMESTAMP, nullable=True),
        sa.Column("created_at", _TIMESTAMP, nullable=False),
        sa.Column("updated_at", _TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.ForeignKeyConstraint(
            ["organization_id", "project_id"],
            ["projects.organization_id", "projects.id"],
            name="fk_api_keys_organization_id_project_id_projects",
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id", "service_account_id"],
            ["service_accounts.organization_id", "service_accounts.id"],
            name="fk_api_keys_organization_id_service_account_id_service_accounts",
            ondelete="RESTRICT",
        ),
        sa.CheckConstraint(
            "status IN ('active', 'disabled', 'revoked')", name="ck_api_keys_status"
        ),
    )
    op.create_index("ix_api_keys_organization_id_id", "api_keys", ["organization_id", "id"])
    op.create_index(
        "ix_api_keys_organization_id_project_id_id",
        "api_keys",
        ["organization_id", "project_id", "id"],
    )
    op.create_table(
        "audit_log",
        sa.Column("seq", _SEQ, autoincrement=False, nullable=False),
        sa.Column("at", _TIMESTAMP, nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("target_type", sa.Text(), nullable=False),
        sa.Column("target_id", sa.Text(), nullable=False),
        sa.Column("organization_id", sa.Text(), nullable=True),
        sa.Column("before", sa.JSON(), nullable=True),
        sa.Column("after", sa.JSON(), nullable=True),
        sa.Column("source_ip", sa.Text(), nullable=True),
        sa.Column("request_id", sa.Text(), nullable=True),
        sa.Column("prev_hash", sa.Text(), nullable=False),
        sa.Column("entry_hash", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_audit_log"),
        sa.UniqueConstraint("entry_hash", name="uq_audit_log_entry_hash"),
    )
    op.create_index("ix_audit_log_organization_id_at", "audit_log", ["organization_id", "at"])
    op.create_index("ix_audit_log_organization_id_seq", "audit_log", ["organization_id", "seq"])
    op.create_table(
        "upstream_secrets",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("organization_id", sa.Text(), nullable=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("key_version", sa.Integer(), nullable=False),
        sa.Column("created_at", _TIMESTAMP, nullable=False),
        sa.Column("updated_at", _TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_upstream_secrets"),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name="fk_upstream_secrets_organization_id_organizations",
            ondelete="RESTRICT",
        ),
        sa.UniqueConstraint(
            "organization_id", "name", name="uq_upstream_secrets_organization_id_name"
        ),
    )
    op.create_index(
        "uq_upstream_secrets_name_deployment",
        "upstream_secrets",
        ["name"],
        unique=True,
        sqlite_where=_DEPLOYMENT_WIDE,
        postgresql_where=_DEPLOYMENT_WIDE,
    )


def downgrade() -> None:
    for table in (
        "upstream_secrets",
        "audit_log",
        "api_keys",
        "role_bindings",
        "service_accounts",
        "users",
        "projects",
        "organizations",
    ):
        op.drop_table(table)
