"""Request debugging tables (migration 0008): debug sessions and the detail they captured.

They join ``schema.metadata`` (``schema.py`` imports this module at its end, so
whoever imports the schema sees every table).

**Sessions.** An operator asks for "the next N requests of this API key at full
detail" (``POST …/api_keys/{id}/debug``, audited). ``request_debug_sessions``
holds that request: ``remaining`` counts down as records are stored, so every
worker of every replica together stores at most ``requested`` records, and
``expires_at`` ends a forgotten session on its own. No foreign keys, as in the
audit log: a session and its records outlive the key and project they name.

**Records.** ``request_debug_records`` holds one request's detail as JSON
(attempts, timings, redacted headers; never prompt or completion content),
written by the data plane's background writer. ``request_id`` is indexed
because that is how ``lockgate inspect`` finds it; it is not unique (a client
may send its own ``x-request-id``).

The ledger gets an index on ``usage_records.request_id`` here too, for the same
look-up.
"""

from __future__ import annotations

from sqlalchemy import Column, Index, Integer, Table, Text

from lockgate.store.columns import UtcDateTime, json_column
from lockgate.store.schema import metadata, usage_records

request_debug_sessions = Table(
    "request_debug_sessions",
    metadata,
    Column("id", Text, primary_key=True),
    Column("organization_id", Text, nullable=False),
    Column("project_id", Text, nullable=False),
    Column("api_key_id", Text, nullable=False),
    Column("requested", Integer, nullable=False),
    Column("remaining", Integer, nullable=False),
    Column("created_by", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    # The admin API lists one key's sessions; the data plane loads the unexpired ones.
    Index("ix_request_debug_sessions_organization_id_api_key_id", "organization_id", "api_key_id"),
    Index("ix_request_debug_sessions_expires_at", "expires_at"),
)

request_debug_records = Table(
    "request_debug_records",
    metadata,
    Column("id", Text, primary_key=True),
    Column("session_id", Text, nullable=False),
    Column("request_id", Text, nullable=False),
    Column("organization_id", Text, nullable=False),
    Column("project_id", Text, nullable=False),
    Column("api_key_id", Text, nullable=False),
    Column("occurred_at", UtcDateTime, nullable=False),
    Column("detail", json_column(), nullable=False),
    Index("ix_request_debug_records_request_id", "request_id"),
    Index("ix_request_debug_records_session_id", "session_id"),
)

# ``lockgate inspect REQUEST_ID`` reads the ledger by request id.
Index("ix_usage_records_request_id", usage_records.c.request_id)
