"""Tables of spend budgets, billing webhooks and background leases (migration 0006).

Registered on ``schema.metadata`` (``schema.py`` imports this module last), so
the migration checks and ``metadata.create_all`` see them like every other table.

- ``budgets``: one per (scope, period), the scope being an organisation or one
  of its projects. Deleting the organisation or project deletes its budgets
  (they only ever restrict). The evaluator writes what it last measured
  (``spent_micros`` for ``spent_period_start``) on the row itself, which is
  what admission reads to refuse an exhausted ``reject`` budget.
- ``budget_crossings``: the primary key (budget, period start, threshold) is
  what makes a ``budget.threshold_crossed`` event fire once, whatever number
  of evaluators race or restart.
- ``webhook_subscriptions``: the signing secret is sealed with the master
  keyring (``previous_secret`` too, during a rotation's grace period).
- ``webhook_events`` is the outbox: written in the transaction that decided
  the event; ``dedupe_key`` makes the decision idempotent. No foreign keys: an
  event outlives the budget or subscription that caused it, like the audit log.
- ``webhook_deliveries`` (one per event and subscription, or per replay) and
  ``webhook_attempts`` (the delivery log) go with their subscription.
- ``background_leases``: which process runs the deployment's single-instance
  background work, until when.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    Table,
    Text,
    UniqueConstraint,
)

from lockgate.store.columns import UtcDateTime, json_column
from lockgate.store.schema import metadata

budgets = Table(
    "budgets",
    metadata,
    Column("id", Text, primary_key=True),
    Column(
        "organization_id",
        Text,
        ForeignKey("organizations.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("project_id", Text, ForeignKey("projects.id", ondelete="CASCADE"), nullable=True),
    # "organization:<id>" or "project:<id>": unique with the period, NULL-free.
    Column("scope_key", Text, nullable=False),
    Column("period", Text, nullable=False),
    Column("amount_micros", BigInteger, nullable=False),
    Column("currency", Text, nullable=False),
    Column("thresholds", json_column(), nullable=False),  # percentages, ascending
    Column("action", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("spent_micros", BigInteger, nullable=False),
    Column("spent_period_start", UtcDateTime, nullable=True),
    Column("evaluated_at", UtcDateTime, nullable=True),
    UniqueConstraint("scope_key", "period"),
    CheckConstraint("period IN ('day', 'month')", name="period"),
    CheckConstraint("action IN ('reject', 'alert_only')", name="action"),
    CheckConstraint("amount_micros > 0", name="amount"),
    Index("ix_budgets_organization_id_id", "organization_id", "id"),
)

budget_crossings = Table(
    "budget_crossings",
    metadata,
    Column("budget_id", Text, ForeignKey("budgets.id", ondelete="CASCADE"), primary_key=True),
    Column("period_start", UtcDateTime, primary_key=True),
    Column("threshold", Integer, primary_key=True),
    Column("spent_micros", BigInteger, nullable=False),
    Column("amount_micros", BigInteger, nullable=False),
    Column("event_id", Text, nullable=False),
    Column("crossed_at", UtcDateTime, nullable=False),
)

webhook_subscriptions = Table(
    "webhook_subscriptions",
    metadata,
    Column("id", Text, primary_key=True),
    Column(
        "organization_id",
        Text,
        ForeignKey("organizations.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("url", Text, nullable=False),
    Column("event_types", json_column(), nullable=False),
    Column("description", Text, nullable=False),
    Column("is_enabled", Boolean, nullable=False),
    Column("secret", LargeBinary, nullable=False),
    Column("previous_secret", LargeBinary, nullable=True),
    Column("previous_expires_at", UtcDateTime, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Index("ix_webhook_subscriptions_organization_id_id", "organization_id", "id"),
)

webhook_events = Table(
    "webhook_events",
    metadata,
    Column("id", Text, primary_key=True),
    Column("organization_id", Text, nullable=False),
    Column("type", Text, nullable=False),
    Column("dedupe_key", Text, nullable=False, unique=True),
    Column("payload", json_column(), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", Text, primary_key=True),
    Column("organization_id", Text, nullable=False),
    Column(
        "subscription_id",
        Text,
        ForeignKey("webhook_subscriptions.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("event_id", Text, ForeignKey("webhook_events.id"), nullable=False),
    Column("status", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UtcDateTime, nullable=False),
    Column("last_status_code", Integer, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("replay_of", Text, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    CheckConstraint("status IN ('pending', 'delivered', 'failed')", name="status"),
    # The deliverer's scan: due pending deliveries, oldest first.
    Index("ix_webhook_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
    Index("ix_webhook_deliveries_subscription_id_id", "subscription_id", "id"),
)

webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column(
        "delivery_id",
        Text,
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("attempt", Integer, primary_key=True),
    Column("started_at", UtcDateTime, nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("latency_ms", Double, nullable=False),
    Column("error", Text, nullable=True),
)

background_leases = Table(
    "background_leases",
    metadata,
    Column("name", Text, primary_key=True),
    Column("holder", Text, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
)
