"""Runtime deployments (admin API, engine registration), version rollouts, the engine role.

Revision ID: 0007_deployment_registry
Revises: 0006_budgets_webhooks
Create Date: 2026-11-24

Two new tables (see ``schema_registry.py``), and ``engine`` joins the roles a
binding may hold (the role that may register deployments). SQLite cannot alter
a CHECK constraint, so there the role-bindings table is rebuilt (its rows
copied); its expression index, which SQLite cannot reflect, is recreated by hand.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_deployment_registry"
down_revision: str | None = "0006_budgets_webhooks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIMESTAMP = sa.DateTime(timezone=True).with_variant(sa.String(32), "sqlite")
# 0001 named CHECK constraints through the convention, which prefixed them twice.
_CK = "ck_role_bindings_ck_role_bindings_"
_ROLES = ("superadmin", "org_owner", "org_admin", "project_admin", "member", "viewer", "auditor")


def _role_check(roles: Sequence[str]) -> str:
    return f"role IN ({', '.join(repr(r) for r in roles)})"


def upgrade() -> None:
    op.create_table(
        "runtime_deployments",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("base_url", sa.Text(), nullable=False),
        sa.Column("upstream_model", sa.Text(), nullable=True),
        sa.Column("capacity", sa.Integer(), nullable=True),
        sa.Column("weight", sa.Double(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("registered_by", sa.Text(), nullable=False),
        sa.Column("expires_at", _TIMESTAMP, nullable=True),
        sa.Column("created_at", _TIMESTAMP, nullable=False),
        sa.Column("updated_at", _TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_runtime_deployments"),
        sa.UniqueConstraint("model", "name", name="uq_runtime_deployments_model_name"),
        sa.CheckConstraint("source IN ('admin', 'engine')", name="ck_runtime_deployments_source"),
        sa.CheckConstraint(
            "(source = 'admin') = (expires_at IS NULL)", name="ck_runtime_deployments_expiry"
        ),
    )
    op.create_index("ix_runtime_deployments_expires_at", "runtime_deployments", ["expires_at"])
    op.create_table(
        "model_rollouts",
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("candidate", sa.Text(), nullable=False),
        sa.Column("percent", sa.Double(), nullable=False),
        sa.Column("shadow_percent", sa.Double(), nullable=False),
        sa.Column("is_rolled_back", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("updated_by", sa.Text(), nullable=False),
        sa.Column("updated_at", _TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("model", name="pk_model_rollouts"),
        sa.CheckConstraint("percent >= 0 AND percent <= 100", name="ck_model_rollouts_percent"),
        sa.CheckConstraint(
            "shadow_percent >= 0 AND shadow_percent <= 100",
            name="ck_model_rollouts_shadow_percent",
        ),
    )
    _replace_role_check((*_ROLES, "engine"))


def downgrade() -> None:
    op.execute("DELETE FROM role_bindings WHERE role = 'engine'")
    _replace_role_check(_ROLES)
    op.drop_table("model_rollouts")
    op.drop_index("ix_runtime_deployments_expires_at", table_name="runtime_deployments")
    op.drop_table("runtime_deployments")


def _replace_role_check(roles: Sequence[str]) -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.drop_constraint("ck_role_bindings_role", "role_bindings", type_="check")
        op.create_check_constraint("ck_role_bindings_role", "role_bindings", _role_check(roles))
        return
    op.drop_index("uq_role_bindings_grant", table_name="role_bindings")
    with op.batch_alter_table("role_bindings", recreate="always", copy_from=_role_bindings(roles)):
        pass
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


def _role_bindings(roles: Sequence[str]) -> sa.Table:
    """The table as 0001 made it, with ``roles`` allowed: SQLite's rebuild copies from
    this definition, not from reflection (which would rename the CHECK constraints
    once more). Their names are what 0001 created through the naming convention."""
    return sa.Table(
        "role_bindings",
        sa.MetaData(),
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
            "subject_kind IN ('user', 'service_account')", name=_CK + "subject_kind"
        ),
        sa.CheckConstraint(_role_check(roles), name=_CK + "role"),
        sa.CheckConstraint(
            "(role = 'superadmin') = (organization_id IS NULL)",
            name=_CK + "role_scope",
        ),
        sa.CheckConstraint(
            "project_id IS NULL OR organization_id IS NOT NULL",
            name=_CK + "project_scope",
        ),
        sa.Index("ix_role_bindings_organization_id_id", "organization_id", "id"),
    )
