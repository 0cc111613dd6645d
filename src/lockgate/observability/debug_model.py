"""The records of request debugging: sessions ("trace this key's next N requests") and
what they captured.

Plain frozen values shared by the store, the admin API, the CLI and the data
plane's writer; nothing here imports the data plane or the store.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

# Bounds an operator may ask for: enough to catch an intermittent failure, too few to
# turn debugging into a second request log.
MAX_DEBUG_REQUESTS = 1000
DEFAULT_DEBUG_TTL_S = 3600
MAX_DEBUG_TTL_S = 24 * 3600


@dataclass(frozen=True, slots=True)
class DebugSession:
    """One key's debug session: at most ``requested`` requests captured, until ``expires_at``."""

    id: str
    organization_id: str
    project_id: str
    api_key_id: str
    requested: int
    remaining: int
    created_by: str  # the audit actor: "user:<id>", "api_key:<id>", "cli:<name>"
    created_at: datetime
    expires_at: datetime

    def is_active(self, now: datetime) -> bool:
        return self.remaining > 0 and now < self.expires_at

    def to_json(self, now: datetime) -> dict[str, Any]:
        return {
            "id": self.id,
            "organization_id": self.organization_id,
            "project_id": self.project_id,
            "api_key_id": self.api_key_id,
            "requested": self.requested,
            "remaining": self.remaining,
            "captured": self.requested - self.remaining,
            "is_active": self.is_active(now),
            "created_by": self.created_by,
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class CapturedRequest:
    """One traced request's detail, as the data plane hands it to the writer."""

    session_id: str
    request_id: str
    organization_id: str
    project_id: str
    api_key_id: str
    occurred_at: datetime
    detail: dict[str, Any]


@dataclass(frozen=True, slots=True)
class DebugRecord:
    """A stored ``CapturedRequest``."""

    id: str
    session_id: str
    request_id: str
    organization_id: str
    project_id: str
    api_key_id: str
    occurred_at: datetime
    detail: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "session_id": self.session_id,
            "request_id": self.request_id,
            "organization_id": self.organization_id,
            "project_id": self.project_id,
            "api_key_id": self.api_key_id,
            "occurred_at": self.occurred_at.isoformat(),
            "detail": self.detail,
        }
