"""Usage reporting: roll-ups of the ledger, admin-set prices, the CloudEvents push queue.

Revision ID: 0005_usage_reporting
Revises: 0004_usage_ledger
Create Date: 2026-11-24

New tables only (see ``schema_reporting``). The roll-ups are backfilled from the
records already in ``usage_records``: hourly from the records, daily from the
hours, monthly from the days, a day at a time, in the migration's transaction. Gateways must be
stopped while it runs (as for every migration): a flusher writing records
between the backfill's read and its commit would otherwise be missing from the
roll-ups. Downgrading drops the tables; the ledger itself is untouched.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op

revision: str = "0005_usage_reporting"
down_revision: str | None = "0004_usage_ledger"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIMESTAMP = sa.DateTime(timezone=True).with_variant(sa.String(32), "sqlite")
_ROLLUPS = ("usage_rollup_hourly", "usage_rollup_daily", "usage_rollup_monthly")
_DIMENSIONS = ("organization_id", "project_id", "api_key_id", "model", "deployment")
_MEASURES = (
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cost_micros",
    "estimated_requests",
    "error_requests",
)
# SQLite keeps times as fixed-width UTC text: a bucket is a prefix plus the rest.
_SQLITE_REST = {
    "hour": (13, ":00:00.000000+00:00"),
    "day": (10, "T00:00:00.000000+00:00"),
    "month": (7, "-01T00:00:00.000000+00:00"),
}


def upgrade() -> None:
    for name in _ROLLUPS:
        op.create_table(
            name,
            sa.Column("organization_id", sa.Text(), nullable=False),
            sa.Column("bucket_start", _TIMESTAMP, nullable=False),
            sa.Column("project_id", sa.Text(), nullable=False),
            sa.Column("api_key_id", sa.Text(), nullable=False),
            sa.Column("model", sa.Text(), nullable=False),
            sa.Column("deployment", sa.Text(), nullable=False),
            *(sa.Column(m, sa.BigInteger(), nullable=False) for m in _MEASURES),
            sa.PrimaryKeyConstraint(
                "organization_id",
                "bucket_start",
                "project_id",
                "api_key_id",
                "model",
                "deployment",
                name=f"pk_{name}",
            ),
        )
        op.create_index(f"ix_{name}_bucket_start", name, ["bucket_start"])
    op.create_table(
        "prices",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("deployment", sa.Text(), nullable=False),
        sa.Column("effective_from", _TIMESTAMP, nullable=False),
        sa.Column("currency", sa.Text(), nullable=False),
        sa.Column("input_per_million", sa.Text(), nullable=False),
        sa.Column("output_per_million", sa.Text(), nullable=False),
        sa.Column("cached_input_per_million", sa.Text(), nullable=True),
        sa.Column("request_fee", sa.Text(), nullable=False),
        sa.Column("created_at", _TIMESTAMP, nullable=False),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_prices"),
    )
    op.create_index(
        "uq_prices_model_deployment_effective_from",
        "prices",
        ["model", "deployment", "effective_from"],
        unique=True,
    )
    op.create_table(
        "usage_push_queue",
        sa.Column("record_id", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("record_id", name="pk_usage_push_queue"),
    )
    op.create_table(
        "usage_push_state",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("lease_owner", sa.Text(), nullable=True),
        sa.Column("lease_expires_at", _TIMESTAMP, nullable=True),
        sa.Column("pushed_events", sa.BigInteger(), nullable=False),
        sa.Column("last_pushed_at", _TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("name", name="pk_usage_push_state"),
    )
    _backfill()


def _truncate(unit: str, column: str, is_postgres: bool) -> str:
    if is_postgres:
        return f"date_trunc('{unit}', {column}, 'UTC')"
    cut, rest = _SQLITE_REST[unit]
    return f"substr({column}, 1, {cut}) || '{rest}'"


def _backfill() -> None:
    """Sum the existing ledger into the roll-ups (each level from the one below).

    A day at a time (a month at a time for the monthly level): each statement is
    an index range, short enough for the store's per-statement timeout however
    large the ledger, and the migration's transaction still makes it all or nothing.
    """
    bind = op.get_bind()
    is_postgres = bind.dialect.name == "postgresql"
    span = bind.execute(sa.text("SELECT min(occurred_at), max(occurred_at) FROM usage_records"))
    first, last = span.one()
    if first is None:
        return
    first, last = _as_utc(first), _as_utc(last)
    columns = f"organization_id, bucket_start, {', '.join(_DIMENSIONS[1:])}, {', '.join(_MEASURES)}"
    hourly = sa.text(
        f"INSERT INTO usage_rollup_hourly ({columns}) "  # noqa: S608 - constants only
        f"SELECT coalesce(organization_id, ''), {_truncate('hour', 'occurred_at', is_postgres)}, "
        "coalesce(project_id, ''), coalesce(api_key_id, ''), model, coalesce(deployment, ''), "
        "count(*), sum(prompt_tokens), sum(completion_tokens), sum(cached_tokens), "
        "sum(reasoning_tokens), sum(cost_micros), "
        "sum(CASE WHEN is_estimated THEN 1 ELSE 0 END), "
        "sum(CASE WHEN error_code IS NOT NULL THEN 1 ELSE 0 END) "
        "FROM usage_records WHERE occurred_at >= :start AND occurred_at < :end "
        "GROUP BY 1, 2, 3, 4, 5, 6"
    )
    sums = ", ".join(f"sum({m})" for m in _MEASURES)
    dimensions = ", ".join(_DIMENSIONS)

    def coarser(target: str, source: str, unit: str) -> sa.TextClause:
        bucket = _truncate(unit, "bucket_start", is_postgres)
        return sa.text(
            f"INSERT INTO {target} ({columns}) "  # noqa: S608 - constants only
            f"SELECT organization_id, {bucket}, project_id, api_key_id, model, deployment, "
            f"{sums} FROM {source} WHERE bucket_start >= :start AND bucket_start < :end "
            f"GROUP BY {bucket}, {dimensions}"
        )

    daily = coarser("usage_rollup_daily", "usage_rollup_hourly", "day")
    monthly = coarser("usage_rollup_monthly", "usage_rollup_daily", "month")
    day = first.replace(hour=0, minute=0, second=0, microsecond=0)
    while day <= last:
        bounds = _bounds(day, day + timedelta(days=1), is_postgres)
        bind.execute(hourly, bounds)
        bind.execute(daily, bounds)
        day += timedelta(days=1)
    month = first.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    while month <= last:
        following = (month + timedelta(days=32)).replace(day=1)
        bind.execute(monthly, _bounds(month, following, is_postgres))
        month = following


def _as_utc(value: datetime | str) -> datetime:
    when = datetime.fromisoformat(value) if isinstance(value, str) else value
    return when.astimezone(UTC)


def _bounds(start: datetime, end: datetime, is_postgres: bool) -> dict[str, object]:
    if is_postgres:
        return {"start": start, "end": end}
    # SQLite compares the fixed-width UTC text the store writes.
    return {
        "start": start.isoformat(timespec="microseconds"),
        "end": end.isoformat(timespec="microseconds"),
    }


def downgrade() -> None:
    op.drop_table("usage_push_state")
    op.drop_table("usage_push_queue")
    op.drop_index("uq_prices_model_deployment_effective_from", table_name="prices")
    op.drop_table("prices")
    for name in reversed(_ROLLUPS):
        op.drop_index(f"ix_{name}_bucket_start", table_name=name)
        op.drop_table(name)
