"""Usage reporting tables (migration 0005): roll-ups, admin-set prices, the push queue.

They join ``schema.metadata`` (``schema.py`` imports this module at its end, so
whoever imports the schema sees every table).

**Roll-ups.** ``usage_rollup_{hourly,daily,monthly}`` hold the ledger summed per
UTC bucket and (organisation, project, key, model, deployment). The flusher
adds to all three in the transaction that inserts the records, counting only
the records that insert actually added, so a re-sent batch adds nothing (see
``repositories/usage_rollups.py``). Dimensions are NOT NULL with ``''`` for
"none" (an anonymous request has no organisation): SQL's NULLs are distinct in
a primary key, so NULL would make the upsert insert a second row instead of
adding to the first. The repository maps ``''`` back to None. The primary key
leads with the organisation, then time: a tenant's report is one index range.

**Prices.** ``prices`` holds the versions added through the admin API; config
prices stay in the config. Rows are never updated: a change is a new version.
``deployment`` is ``''`` for the model's price on every deployment (same
reason as above: the unique key must hold for "no deployment" too). Prices are
decimal text, exact on both backends (SQLite has no exact decimal type).

**Push queue.** ``usage_push_queue`` names the records not yet pushed to the
CloudEvents endpoint: filled by the flusher's insert (when a push is
configured), emptied by the pusher after the endpoint accepted them.
``usage_push_state`` is the pusher's lease and counters, one row per pusher.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Table, Text

from lockgate.store.columns import UtcDateTime
from lockgate.store.schema import metadata

ROLLUP_DIMENSIONS = ("organization_id", "project_id", "api_key_id", "model", "deployment")
ROLLUP_MEASURES = (
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cost_micros",
    "estimated_requests",
    "error_requests",
)


def _rollup(name: str) -> Table:
    return Table(
        name,
        metadata,
        Column("organization_id", Text, primary_key=True),
        Column("bucket_start", UtcDateTime, primary_key=True),
        Column("project_id", Text, primary_key=True),
        Column("api_key_id", Text, primary_key=True),
        Column("model", Text, primary_key=True),
        Column("deployment", Text, primary_key=True),
        *(Column(measure, BigInteger, nullable=False) for measure in ROLLUP_MEASURES),
        # Deployment-wide reports (superadmin) read a time range across organisations.
        Index(f"ix_{name}_bucket_start", "bucket_start"),
    )


usage_rollup_hourly = _rollup("usage_rollup_hourly")
usage_rollup_daily = _rollup("usage_rollup_daily")
usage_rollup_monthly = _rollup("usage_rollup_monthly")

prices = Table(
    "prices",
    metadata,
    Column("id", Text, primary_key=True),
    Column("model", Text, nullable=False),
    Column("deployment", Text, nullable=False),  # '' = every deployment of the model
    Column("effective_from", UtcDateTime, nullable=False),
    Column("currency", Text, nullable=False),
    Column("input_per_million", Text, nullable=False),
    Column("output_per_million", Text, nullable=False),
    Column("cached_input_per_million", Text, nullable=True),
    Column("request_fee", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("created_by", Text, nullable=False),
    Index(
        "uq_prices_model_deployment_effective_from",
        "model",
        "deployment",
        "effective_from",
        unique=True,
    ),
)

usage_push_queue = Table(
    "usage_push_queue",
    metadata,
    Column("record_id", Text, primary_key=True),
)

usage_push_state = Table(
    "usage_push_state",
    metadata,
    Column("name", Text, primary_key=True),
    Column("lease_owner", Text, nullable=True),
    Column("lease_expires_at", UtcDateTime, nullable=True),
    Column("pushed_events", BigInteger, nullable=False),
    Column("last_pushed_at", UtcDateTime, nullable=True),
)
