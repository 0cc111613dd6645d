"""What every admin action shares: who acts, the audit entry, invalidation topics,
what records look like in the audit log, and the model-ceiling rule."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lockgate.controlplane.actions.errors import OutsideAllowedModels
from lockgate.invalidation.bus import InvalidationBus
from lockgate.store.store import Store, Transaction
from lockgate.tenancy.keys import display_prefix
from lockgate.tenancy.model import ApiKeyRecord, Organization, Project, ServiceAccount, User

if TYPE_CHECKING:  # AES-GCM (``cryptography``) loads only where a master key is configured
    from lockgate.tenancy.secretbox import Keyring

# Invalidation topics: the key cache of every process drops what the message names.
TOPIC_API_KEY = "api_key"  # one key id
TOPIC_PROJECT = "project"  # every key of a project id
TOPIC_ORGANIZATION = "organization"  # every key of an organisation id


@dataclass(frozen=True, slots=True)
class Actor:
    """Who performs an admin action, as the audit trail records it."""

    id: str  # "user:<id>", "service_account:<id>", "api_key:<id>", "system"
    source_ip: str | None = None
    request_id: str | None = None


SYSTEM = Actor("system")


def key_summary(key: ApiKeyRecord) -> dict[str, Any]:
    """What the audit log and the admin API may show of a key: never a hash or secret."""
    return {
        "id": key.id,
        "prefix": display_prefix(key.id),
        "name": key.name,
        "organization_id": key.organization_id,
        "project_id": key.project_id,
        "status": key.status.value,
        "scopes": [s.value for s in key.scopes],
        "allowed_models": list(key.allowed_models),
        "allowed_cidrs": list(key.allowed_cidrs),
        "required_model_tags": dict(key.required_model_tags),
        "limits": key.limits.to_json(),
        "metadata": dict(key.metadata),
        "expires_at": key.expires_at.isoformat() if key.expires_at else None,
        "previous_expires_at": (
            key.previous_expires_at.isoformat() if key.previous_expires_at else None
        ),
        "service_account_id": key.service_account_id,
        "created_at": key.created_at.isoformat(),
    }


def organization_summary(org: Organization) -> dict[str, Any]:
    return {
        "id": org.id,
        "name": org.name,
        "allowed_models": list(org.allowed_models),
        "limits": org.limits.to_json(),
        "metadata": dict(org.metadata),
        "created_at": org.created_at.isoformat(),
    }


def project_summary(project: Project) -> dict[str, Any]:
    return {
        "id": project.id,
        "organization_id": project.organization_id,
        "name": project.name,
        "allowed_models": list(project.allowed_models),
        "limits": project.limits.to_json(),
        "model_limits": {m: spec.to_json() for m, spec in project.model_limits.items()},
        "log_prompts": project.log_prompts,
        "created_at": project.created_at.isoformat(),
    }


def user_summary(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "organization_id": user.organization_id,
        "email": user.email,
        "name": user.name,
        "is_disabled": user.is_disabled,
        "created_at": user.created_at.isoformat(),
    }


def service_account_summary(account: ServiceAccount) -> dict[str, Any]:
    return {
        "id": account.id,
        "organization_id": account.organization_id,
        "name": account.name,
        "is_disabled": account.is_disabled,
        "created_at": account.created_at.isoformat(),
    }


def changes(before: dict[str, Any], after: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Only the fields an update changed, as (before, after) for the audit entry."""
    names = [name for name in after if before.get(name) != after[name]]
    return {n: before.get(n) for n in names}, {n: after[n] for n in names}


def check_within(models: Iterable[str], ceiling: Iterable[str], *, param: str, owner: str) -> None:
    """Refuse an allow-list that names models outside its parent's (empty = no ceiling)."""
    ceiling_set = set(ceiling)
    if not ceiling_set:
        return
    outside = sorted(set(models) - ceiling_set)
    if outside:
        raise OutsideAllowedModels(
            f"{', '.join(outside)} {'is' if len(outside) == 1 else 'are'} not allowed by the "
            f"{owner} (it allows: {', '.join(sorted(ceiling_set))})",
            param=param,
        )


async def audit(
    tx: Transaction,
    actor: Actor,
    action: str,
    target_type: str,
    target_id: str,
    organization_id: str | None,
    *,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    """The entry every action appends last in its transaction (the store requires it last)."""
    await tx.audit.append(
        actor=actor.id,
        action=action,
        target_type=target_type,
        target_id=target_id,
        organization_id=organization_id,
        before=before,
        after=after,
        source_ip=actor.source_ip,
        request_id=actor.request_id,
    )


class ActionsBase:
    """The services every group of actions uses; ``AdminActions`` combines the groups."""

    def __init__(
        self,
        store: Store,
        bus: InvalidationBus,
        pepper: bytes,
        keyring: Keyring | None = None,
    ) -> None:
        self._store = store
        self._bus = bus
        self._pepper = pepper
        # Master keys for secrets at rest (upstream credentials, idempotent replays);
        # None when LOCKGATE_MASTER_KEYS is not configured.
        self._keyring = keyring

    @property
    def can_encrypt(self) -> bool:
        return self._keyring is not None

    async def _publish_keys(self, key_ids: Iterable[str]) -> None:
        """Drop each key from every process's cache (after the change committed)."""
        for key_id in key_ids:
            await self._bus.publish(TOPIC_API_KEY, key_id)
