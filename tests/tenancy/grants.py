"""``KeyGrant``s for tests that keep keys in memory: the key with a matching project and
organisation, whose allow-lists a test can set."""

from __future__ import annotations

from datetime import UTC, datetime

from lockgate.tenancy.key_cache import KeyGrant
from lockgate.tenancy.model import ApiKeyRecord, Organization, Project


def grant_for(
    key: ApiKeyRecord,
    *,
    project_models: tuple[str, ...] = (),
    organization_models: tuple[str, ...] = (),
    service_account_disabled: bool = False,
) -> KeyGrant:
    now = datetime.now(UTC)
    return KeyGrant(
        key=key,
        project=Project(
            id=key.project_id,
            organization_id=key.organization_id,
            name="project",
            created_at=now,
            allowed_models=project_models,
        ),
        organization=Organization(
            id=key.organization_id,
            name="organization",
            created_at=now,
            allowed_models=organization_models,
        ),
        service_account_disabled=service_account_disabled,
    )
