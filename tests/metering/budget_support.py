"""Spend in the ledger, and organisations with unique names, for the budget tests."""

from __future__ import annotations

import secrets
from datetime import datetime

from lockgate.metering.record import UsageRecord
from lockgate.store import Store


def unique(name: str) -> str:
    return f"{name}-{secrets.token_hex(4)}"


def spend_record(
    organization_id: str, project_id: str | None, cost_micros: int, at: datetime
) -> UsageRecord:
    """One billed request, as the ledger's flusher would have stored it."""
    record_id = f"ur_test_{secrets.token_hex(8)}"
    return UsageRecord(
        record_id=record_id,
        request_id=record_id,
        occurred_at=at,
        organization_id=organization_id,
        project_id=project_id,
        api_key_id=None,
        principal="anonymous",
        operation="chat.completions",
        model="sim-chat",
        upstream_model=None,
        deployment="d",
        prompt_tokens=10,
        completion_tokens=5,
        cached_tokens=0,
        reasoning_tokens=0,
        is_estimated=False,
        status=200,
        error_code=None,
        error_source=None,
        ttft_ms=None,
        total_ms=1.0,
        is_stream=False,
        is_client_disconnected=False,
        price_id="p1",
        currency="USD",
        cost_micros=cost_micros,
    )


async def spend(
    store: Store, organization_id: str, project_id: str | None, cost_micros: int, at: datetime
) -> None:
    await store.usage.insert_many([spend_record(organization_id, project_id, cost_micros, at)])
