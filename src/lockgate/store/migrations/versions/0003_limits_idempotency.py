"""Limits on organisations, projects and keys; the organisation's model ceiling;
idempotency records for the admin API.

Revision ID: 0003_limits_idempotency
Revises: 0002_key_model_tags
Create Date: 2026-12-01

Every new column has a server default, so existing rows read as "no limits"
and "any model" and no data migration is needed. Columns are added with plain
``ALTER TABLE ... ADD COLUMN`` (SQLite supports it with a constant default), not
batch mode: recreating ``organizations`` or ``projects`` on SQLite would drop a
table other rows refer to, which foreign-key enforcement refuses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0003_limits_idempotency"
down_revision: str | None = "0002_key_model_tags"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIMESTAMP = sa.DateTime(timezone=True).with_variant(sa.String(32), "sqlite")


def _json(name: str, default: str) -> sa.Column[Any]:
    return sa.Column(name, sa.JSON(), nullable=False, server_default=sa.text(f"'{default}'"))


def upgrade() -> None:
    op.add_column("organizations", _json("allowed_models", "[]"))
    op.add_column("organizations", _json("limits", "{}"))
    op.add_column("projects", _json("limits", "{}"))
    op.add_column("projects", _json("model_limits", "{}"))
    op.add_column("api_keys", _json("limits", "{}"))
    op.create_table(
        "idempotency_records",
        sa.Column("principal", sa.Text(), nullable=False),
        sa.Column("idempotency_key", sa.Text(), nullable=False),
        sa.Column("request_hash", sa.Text(), nullable=False),
        sa.Column("organization_id", sa.Text(), nullable=True),
        sa.Column("response", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", _TIMESTAMP, nullable=False),
        sa.Column("expires_at", _TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("principal", "idempotency_key", name="pk_idempotency_records"),
    )
    op.create_index(
        "ix_idempotency_records_expires_at", "idempotency_records", ["expires_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_idempotency_records_expires_at", table_name="idempotency_records")
    op.drop_table("idempotency_records")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("limits")
    with op.batch_alter_table("projects") as batch:
        batch.drop_column("model_limits")
        batch.drop_column("limits")
    with op.batch_alter_table("organizations") as batch:
        batch.drop_column("limits")
        batch.drop_column("allowed_models")
