"""Request debugging: per-key debug sessions and the request detail they captured.

Revision ID: 0008_request_debugging
Revises: 0007_deployment_registry
Create Date: 2026-11-24

New tables (see ``schema_debugging``) and an index on
``usage_records.request_id`` for ``lockgate inspect``. On a large ledger the
index takes a while to build (gateways are stopped while migrations run, as
always). Downgrading drops all three.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_request_debugging"
down_revision: str | None = "0007_deployment_registry"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIMESTAMP = sa.DateTime(timezone=True).with_variant(sa.String(32), "sqlite")


def upgrade() -> None:
    op.create_table(
        "request_debug_sessions",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("organization_id", sa.Text(), nullable=False),
        sa.Column("project_id", sa.Text(), nullable=False),
        sa.Column("api_key_id", sa.Text(), nullable=False),
        sa.Column("requested", sa.Integer(), nullable=False),
        sa.Column("remaining", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.Column("created_at", _TIMESTAMP, nullable=False),
        sa.Column("expires_at", _TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_request_debug_sessions"),
    )
    op.create_index(
        "ix_request_debug_sessions_organization_id_api_key_id",
        "request_debug_sessions",
        ["organization_id", "api_key_id"],
    )
    op.create_index(
        "ix_request_debug_sessions_expires_at", "request_debug_sessions", ["expires_at"]
    )
    op.create_table(
        "request_debug_records",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("session_id", sa.Text(), nullable=False),
        sa.Column("request_id", sa.Text(), nullable=False),
        sa.Column("organization_id", sa.Text(), nullable=False),
        sa.Column("project_id", sa.Text(), nullable=False),
        sa.Column("api_key_id", sa.Text(), nullable=False),
        sa.Column("occurred_at", _TIMESTAMP, nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_request_debug_records"),
    )
    op.create_index("ix_request_debug_records_request_id", "request_debug_records", ["request_id"])
    op.create_index("ix_request_debug_records_session_id", "request_debug_records", ["session_id"])
    op.create_index("ix_usage_records_request_id", "usage_records", ["request_id"])


def downgrade() -> None:
    op.drop_index("ix_usage_records_request_id", table_name="usage_records")
    op.drop_index("ix_request_debug_records_session_id", table_name="request_debug_records")
    op.drop_index("ix_request_debug_records_request_id", table_name="request_debug_records")
    op.drop_table("request_debug_records")
    op.drop_index("ix_request_debug_sessions_expires_at", table_name="request_debug_sessions")
    op.drop_index(
        "ix_request_debug_sessions_organization_id_api_key_id",
        table_name="request_debug_sessions",
    )
    op.drop_table("request_debug_sessions")
