"""Admin actions: each change and its audit entry commit together, then caches hear of it.

The admin API, the CLI and the demo all go through these functions, so there
is one place where a key is created, rotated or revoked. Authorisation
(who may call them) is the caller's job; these functions record who did it.

Ordering matters for revocation: the database change commits first, then the
invalidation is published, so a replica that reloads the key after hearing
the message reads the new state. If publishing fails the change stands and
the caller gets ``InvalidationUnavailable`` (caches then expire by TTL).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from lockgate.invalidation.bus import InvalidationBus
from lockgate.store.store import Store, Transaction
from lockgate.tenancy.keys import display_prefix, generate_key, hash_secret
from lockgate.tenancy.model import (
    ApiKeyRecord,
    KeyStatus,
    Organization,
    PrincipalKind,
    Project,
    Role,
    RoleBinding,
    Scope,
    ServiceAccount,
)

TOPIC_API_KEY = "api_key"
TOPIC_PROJECT = "project"


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
        "expires_at": key.expires_at.isoformat() if key.expires_at else None,
        "previous_expires_at": (
            key.previous_expires_at.isoformat() if key.previous_expires_at else None
        ),
        "service_account_id": key.service_account_id,
        "created_at": key.created_at.isoformat(),
    }


async def _audit(
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


class AdminActions:
    def __init__(self, store: Store, bus: InvalidationBus, pepper: bytes) -> None:
        self._store = store
        self._bus = bus
        self._pepper = pepper

    async def create_organization(self, actor: Actor, name: str) -> Organization:
        async with self._store.transaction() as tx:
            org = await tx.organizations.create(name=name)
            await _audit(
                tx,
                actor,
                "organization.create",
                "organization",
                org.id,
                org.id,
                after={"id": org.id, "name": org.name},
            )
        return org

    async def create_project(
        self, actor: Actor, organization_id: str, name: str, allowed_models: Iterable[str] = ()
    ) -> Project:
        async with self._store.transaction() as tx:
            project = await tx.projects.create(
                organization_id=organization_id, name=name, allowed_models=tuple(allowed_models)
            )
            await _audit(
                tx,
                actor,
                "project.create",
                "project",
                project.id,
                organization_id,
                after={
                    "id": project.id,
                    "name": project.name,
                    "allowed_models": list(project.allowed_models),
                },
            )
        return project

    async def update_project(
        self,
        actor: Actor,
        organization_id: str,
        project_id: str,
        *,
        name: str | None = None,
        allowed_models: Iterable[str] | None = None,
    ) -> Project:
        """Rename or re-scope a project; its keys' cached grants are dropped everywhere."""
        async with self._store.transaction() as tx:
            before = await tx.projects.get(
                project_id, organization_id=organization_id, for_update=True
            )
            after = await tx.projects.update(
                project_id,
                organization_id=organization_id,
                name=before.name if name is None else name,
                allowed_models=(
                    before.allowed_models if allowed_models is None else tuple(allowed_models)
                ),
            )
            await _audit(
                tx,
                actor,
                "project.update",
                "project",
                project_id,
                organization_id,
                before={"name": before.name, "allowed_models": list(before.allowed_models)},
                after={"name": after.name, "allowed_models": list(after.allowed_models)},
            )
        # Cached keys carry the project's allowed models: every replica must reload them.
        await self._bus.publish(TOPIC_PROJECT, project_id)
        return after

    async def delete_role_binding(
        self, actor: Actor, organization_id: str, binding_id: str
    ) -> RoleBinding:
        """Revoke a role; admin calls check bindings per request, so it applies at once."""
        async with self._store.transaction() as tx:
            binding = await tx.role_bindings.get(binding_id, organization_id=organization_id)
            await tx.role_bindings.delete(binding_id, organization_id=organization_id)
            await _audit(
                tx,
                actor,
                "role_binding.delete",
                "role_binding",
                binding_id,
                organization_id,
                before={
                    "subject": f"{binding.subject_kind.value}:{binding.subject_id}",
                    "role": binding.role.value,
                    "project_id": binding.project_id,
                },
            )
        return binding

    async def create_api_key(
        self,
        actor: Actor,
        *,
        organization_id: str,
        project_id: str,
        name: str,
        scopes: Iterable[Scope] = (Scope.INFERENCE,),
        allowed_models: Iterable[str] = (),
        allowed_cidrs: Iterable[str] = (),
        required_model_tags: Mapping[str, str] | None = None,
        expires_at: datetime | None = None,
        service_account_id: str | None = None,
    ) -> tuple[ApiKeyRecord, str]:
        """Returns the record and the full key string — shown to the caller once, never again."""
        key_id, full_key, secret = generate_key()
        async with self._store.transaction() as tx:
            key = await tx.api_keys.create(
                key_id=key_id,
                organization_id=organization_id,
                project_id=project_id,
                name=name,
                secret_hash=hash_secret(self._pepper, key_id, secret),
                scopes=scopes,
                allowed_models=allowed_models,
                allowed_cidrs=allowed_cidrs,
                required_model_tags=required_model_tags,
                expires_at=expires_at,
                service_account_id=service_account_id,
            )
            await self._audit_key(tx, actor, "api_key.create", None, key)
        # A negative cache entry for this id may exist (someone probed it): drop it.
        await self._bus.publish(TOPIC_API_KEY, key.id)
        return key, full_key

    async def rotate_api_key(
        self, actor: Actor, *, organization_id: str | None, key_id: str, grace: timedelta
    ) -> tuple[ApiKeyRecord, str]:
        """New secret for the same key id; the old one works for ``grace``, then stops."""
        secret = generate_key()[2]
        async with self._store.transaction() as tx:
            before = await tx.api_keys.get(key_id, organization_id=organization_id, for_update=True)
            after = await tx.api_keys.rotate(
                key_id,
                organization_id=organization_id,
                new_secret_hash=hash_secret(self._pepper, key_id, secret),
                previous_expires_at=datetime.now(UTC) + grace,
            )
            await self._audit_key(tx, actor, "api_key.rotate", before, after)
        await self._bus.publish(TOPIC_API_KEY, key_id)
        return after, f"lg_{key_id}_{secret}"

    async def set_api_key_status(
        self, actor: Actor, *, organization_id: str | None, key_id: str, status: KeyStatus
    ) -> ApiKeyRecord:
        """Revoke (final), disable or re-enable a key; takes effect on every replica at once."""
        async with self._store.transaction() as tx:
            before = await tx.api_keys.get(key_id, organization_id=organization_id, for_update=True)
            if before.status is KeyStatus.REVOKED and status is not KeyStatus.REVOKED:
                raise ValueError(
                    f"the key is revoked, which is final: it cannot be set to {status.value}; "
                    "create a new key"
                )
            after = await tx.api_keys.set_status(key_id, status, organization_id=organization_id)
            action = "api_key.revoke" if status is KeyStatus.REVOKED else f"api_key.{status.value}"
            await self._audit_key(tx, actor, action, before, after)
        await self._bus.publish(TOPIC_API_KEY, key_id)
        return after

    async def create_service_account(
        self, actor: Actor, organization_id: str, name: str
    ) -> ServiceAccount:
        async with self._store.transaction() as tx:
            account = await tx.service_accounts.create(organization_id=organization_id, name=name)
            await _audit(
                tx,
                actor,
                "service_account.create",
                "service_account",
                account.id,
                organization_id,
                after={"id": account.id, "name": account.name},
            )
        return account

    async def create_role_binding(
        self,
        actor: Actor,
        *,
        subject_kind: PrincipalKind,
        subject_id: str,
        role: Role,
        organization_id: str | None,
        project_id: str | None = None,
    ) -> RoleBinding:
        """Authorisation to grant (no escalation) is the caller's check: ``rbac.can_grant``."""
        async with self._store.transaction() as tx:
            binding = await tx.role_bindings.create(
                subject_kind=subject_kind,
                subject_id=subject_id,
                role=role,
                organization_id=organization_id,
                project_id=project_id,
            )
            await _audit(
                tx,
                actor,
                "role_binding.create",
                "role_binding",
                binding.id,
                organization_id,
                after={
                    "subject": f"{subject_kind.value}:{subject_id}",
                    "role": role.value,
                    "project_id": project_id,
                },
            )
        return binding

    @staticmethod
    async def _audit_key(
        tx: Transaction, actor: Actor, action: str, before: ApiKeyRecord | None, after: ApiKeyRecord
    ) -> None:
        await _audit(
            tx,
            actor,
            action,
            "api_key",
            after.id,
            after.organization_id,
            before=key_summary(before) if before else None,
            after=key_summary(after),
        )
