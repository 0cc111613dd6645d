"""Request debugging keeps its captured records for a while, not forever."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from lockgate.observability.debug_model import CapturedRequest
from lockgate.store import Store


def _captured(session_id: str, request_id: str, occurred_at: datetime) -> CapturedRequest:
    return CapturedRequest(
        session_id=session_id,
        request_id=request_id,
        organization_id="org_r",
        project_id="proj_r",
        api_key_id="key_r",
        occurred_at=occurred_at,
        detail={"status": 200},
    )


async def test_prune_deletes_old_records_and_ended_sessions_and_keeps_the_rest(
    store: Store,
) -> None:
    repo = store.request_debug
    now = datetime.now(UTC)
    live = await repo.create_session(
        organization_id="org_r", project_id="proj_r", api_key_id="key_r",
        requested=10, created_by="test", expires_at=now + timedelta(hours=1),
    )  # fmt: skip
    ended = await repo.create_session(
        organization_id="org_r", project_id="proj_r", api_key_id="key_r",
        requested=10, created_by="test", expires_at=now - timedelta(days=30),
    )  # fmt: skip
    stored, _ = await repo.store_captured(
        [
            _captured(live.id, "old-request", now - timedelta(days=10)),
            _captured(live.id, "new-request", now - timedelta(minutes=5)),
        ]
    )
    assert stored == 2
    assert await repo.prune(before=now - timedelta(days=7)) == 1
    assert await repo.records_for_request("old-request") == []
    assert [r.request_id for r in await repo.records_for_request("new-request")] == ["new-request"]
    listed = await repo.list_sessions(organization_id="org_r", api_key_id="key_r")
    sessions = {s.id for s in listed}
    assert live.id in sessions
    assert ended.id not in sessions
    assert await repo.prune(before=now - timedelta(days=7)) == 0  # nothing left to do
