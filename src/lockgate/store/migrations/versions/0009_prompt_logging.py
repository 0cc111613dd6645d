"""Prompt logging: a project may opt in to having its prompts in the access log.

Revision ID: 0009_prompt_logging
Revises: 0008_request_debugging
Create Date: 2026-11-24

One column, ``projects.log_prompts``, false for every existing project: prompts
stay out of the logs unless a project's administrator turns this on (and then
they are logged redacted by ``observability.prompt_logging``).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_prompt_logging"
down_revision: str | None = "0008_request_debugging"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("projects") as batch:
        batch.add_column(
            sa.Column("log_prompts", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("projects") as batch:
        batch.drop_column("log_prompts")
