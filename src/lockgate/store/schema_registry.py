"""Tables of runtime deployments and version rollouts (migration 0007).

Registered on ``schema.metadata`` (``schema.py`` imports this module last), so
the migration checks and ``metadata.create_all`` see them like every other table.

- ``runtime_deployments``: deployments of configured models added through the
  admin API (``expires_at`` NULL: until removed) or registered by engines
  (``expires_at`` = last heartbeat + the configured expiry). An expired row is
  simply not live: every reader compares ``expires_at`` with the time, so no
  janitor has to delete it first (writers sweep long-dead rows on the way).
  ``model`` is the entry served: ``name`` or ``name@version``.
- ``model_rollouts``: the live split of a versioned model as an operator (or an
  automatic rollback) last set it; without a row the config's ``rollout`` holds.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    Double,
    Index,
    Integer,
    Table,
    Text,
    UniqueConstraint,
)

from lockgate.store.columns import UtcDateTime, json_column
from lockgate.store.schema import metadata

runtime_deployments = Table(
    "runtime_deployments",
    metadata,
    Column("id", Text, primary_key=True),
    Column("model", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("base_url", Text, nullable=False),
    Column("upstream_model", Text, nullable=True),
    Column("capacity", Integer, nullable=True),
    Column("weight", Double, nullable=False),
    Column("tags", json_column(), nullable=False),
    Column("source", Text, nullable=False),
    Column("registered_by", Text, nullable=False),
    Column("expires_at", UtcDateTime, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    UniqueConstraint("model", "name"),
    CheckConstraint("source IN ('admin', 'engine')", name="source"),
    CheckConstraint("(source = 'admin') = (expires_at IS NULL)", name="expiry"),
    Index("ix_runtime_deployments_expires_at", "expires_at"),
)

model_rollouts = Table(
    "model_rollouts",
    metadata,
    Column("model", Text, primary_key=True),
    Column("candidate", Text, nullable=False),
    Column("percent", Double, nullable=False),
    Column("shadow_percent", Double, nullable=False),
    Column("is_rolled_back", Boolean, nullable=False),
    Column("reason", Text, nullable=True),
    Column("updated_by", Text, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    CheckConstraint("percent >= 0 AND percent <= 100", name="percent"),
    CheckConstraint("shadow_percent >= 0 AND shadow_percent <= 100", name="shadow_percent"),
)
