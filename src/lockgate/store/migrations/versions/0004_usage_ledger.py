"""The usage ledger: one row per request, keyed by its record id.

Revision ID: 0004_usage_ledger
Revises: 0003_limits_idempotency
Create Date: 2026-12-08

A new table only, so nothing existing changes. No foreign keys (see
``schema.usage_records``); two indexes for time-range reports, per organisation
and deployment-wide.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_usage_ledger"
down_revision: str | None = "0003_limits_idempotency"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIMESTAMP = sa.DateTime(timezone=True).with_variant(sa.String(32), "sqlite")


def upgrade() -> None:
    op.create_table(
        "usage_records",
        sa.Column("record_id", sa.Text(), nullable=False),
        sa.Column("request_id", sa.Text(), nullable=False),
        sa.Column("occurred_at", _TIMESTAMP, nullable=False),
        sa.Column("organization_id", sa.Text(), nullable=True),
        sa.Column("project_id", sa.Text(), nullable=True),
        sa.Column("api_key_id", sa.Text(), nullable=True),
        sa.Column("principal", sa.Text(), nullable=False),
        sa.Column("operation", sa.Text(), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("upstream_model", sa.Text(), nullable=True),
        sa.Column("deployment", sa.Text(), nullable=True),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),
        sa.Column("completion_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cached_tokens", sa.BigInteger(), nullable=False),
        sa.Column("reasoning_tokens", sa.BigInteger(), nullable=False),
        sa.Column("is_estimated", sa.Boolean(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("error_code", sa.Text(), nullable=True),
        sa.Column("error_source", sa.Text(), nullable=True),
        sa.Column("ttft_ms", sa.Double(), nullable=True),
        sa.Column("total_ms", sa.Double(), nullable=True),
        sa.Column("is_stream", sa.Boolean(), nullable=False),
        sa.Column("is_client_disconnected", sa.Boolean(), nullable=False),
        sa.Column("price_id", sa.Text(), nullable=True),
        sa.Column("currency", sa.Text(), nullable=True),
        sa.Column("cost_micros", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("record_id", name="pk_usage_records"),
    )
    op.create_index(
        "ix_usage_records_organization_id_occurred_at",
        "usage_records",
        ["organization_id", "occurred_at"],
    )
    op.create_index("ix_usage_records_occurred_at", "usage_records", ["occurred_at"])


def downgrade() -> None:
    op.drop_index("ix_usage_records_occurred_at", table_name="usage_records")
    op.drop_index("ix_usage_records_organization_id_occurred_at", table_name="usage_records")
    op.drop_table("usage_records")
