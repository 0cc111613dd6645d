"""API keys: create (secret returned once), rotate with grace, update, change status.

Ordering matters for revocation: the database change commits first, then the
invalidation is published, so a replica that reloads the key after hearing
the message reads the new state.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from lockgate.admission.spec import NO_LIMITS, LimitSpec
from lockgate.controlplane.actions.base import (
    TOPIC_API_KEY,
    Actor,
    audit,
    check_within,
    key_summary,
)
from lockgate.controlplane.actions.idempotency import IdempotencyActions, IdempotentRequest
from lockgate.store.repositories.base import UNSET, Unchanged
from lockgate.store.store import Transaction
from lockgate.tenancy.keys import generate_key, hash_secret
from lockgate.tenancy.model import ApiKeyRecord, KeyStatus, Scope


def created_response(key: ApiKeyRecord, full_key: str) -> dict[str, Any]:
    """What creating or rotating a key answers: its summary and, this once, the key."""
    return {**key_summary(key), "key": full_key}


async def _check_models(
    tx: Transaction, organization_id: str, project_id: str, models: Iterable[str]
) -> None:
    """A key's allow-list must lie within its project's (or, if that is open, its org's)."""
    project = await tx.projects.get(project_id, organization_id=organization_id)
    if project.allowed_models:
        check_within(models, project.allowed_models, param="allowed_models", owner="project")
        return
    org = await tx.organizations.get(organization_id)
    check_within(models, org.allowed_models, param="allowed_models", owner="organization")


class KeyActions(IdempotencyActions):
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
        limits: LimitSpec = NO_LIMITS,
        metadata: Mapping[str, Any] | None = None,
        idempotency: IdempotentRequest | None = None,
    ) -> tuple[ApiKeyRecord, str]:
        """Returns the record and the full key string — shown to the caller once (and,
        with ``idempotency``, to a retry of the same request within a day)."""
        key_id, full_key, secret = generate_key()
        models = tuple(allowed_models)
        async with self._store.transaction() as tx:
            await self._claim(tx, idempotency, organization_id)
            await _check_models(tx, organization_id, project_id, models)
            key = await tx.api_keys.create(
                key_id=key_id,
                organization_id=organization_id,
                project_id=project_id,
                name=name,
                secret_hash=hash_secret(self._pepper, key_id, secret),
                scopes=scopes,
                allowed_models=models,
                allowed_cidrs=allowed_cidrs,
                required_model_tags=required_model_tags,
                expires_at=expires_at,
                service_account_id=service_account_id,
                limits=limits,
                metadata=metadata,
            )
            await self._complete(tx, idempotency, created_response(key, full_key))
            await self._audit_key(tx, actor, "api_key.create", None, key)
        # A negative cache entry for this id may exist (someone probed it): drop it.
        await self._bus.publish(TOPIC_API_KEY, key.id)
        return key, full_key

    async def rotate_api_key(
        self,
        actor: Actor,
        *,
        organization_id: str | None,
        key_id: str,
        grace: timedelta,
        idempotency: IdempotentRequest | None = None,
    ) -> tuple[ApiKeyRecord, str]:
        """New secret for the same key id; the old one works for ``grace``, then stops."""
        secret = generate_key()[2]
        async with self._store.transaction() as tx:
            await self._claim(tx, idempotency, organization_id)
            before = await tx.api_keys.get(key_id, organization_id=organization_id, for_update=True)
            after = await tx.api_keys.rotate(
                key_id,
                organization_id=organization_id,
                new_secret_hash=hash_secret(self._pepper, key_id, secret),
                previous_expires_at=datetime.now(UTC) + grace,
            )
            full_key = f"lg_{key_id}_{secret}"
            await self._complete(tx, idempotency, created_response(after, full_key))
            await self._audit_key(tx, actor, "api_key.rotate", before, after)
        await self._bus.publish(TOPIC_API_KEY, key_id)
        return after, full_key

    async def update_api_key(
        self,
        actor: Actor,
        *,
        organization_id: str,
        key_id: str,
        name: str | None = None,
        scopes: Iterable[Scope] | None = None,
        allowed_models: Iterable[str] | None = None,
        allowed_cidrs: Iterable[str] | None = None,
        required_model_tags: Mapping[str, str] | None = None,
        expires_at: datetime | Unchanged | None = UNSET,
        metadata: Mapping[str, Any] | None = None,
        limits: LimitSpec | None = None,
    ) -> ApiKeyRecord:
        """Change a key's settings (None: leave as is; ``expires_at=None`` removes the
        expiry). Takes effect on every replica at once. The secret is not touched."""
        async with self._store.transaction() as tx:
            before = await tx.api_keys.get(key_id, organization_id=organization_id, for_update=True)
            models: tuple[str, ...] | Unchanged = UNSET
            if allowed_models is not None:
                models = tuple(allowed_models)
                await _check_models(tx, organization_id, before.project_id, models)
            after = await tx.api_keys.update(
                key_id,
                organization_id=organization_id,
                name=UNSET if name is None else name,
                scopes=UNSET if scopes is None else tuple(scopes),
                allowed_models=models,
                allowed_cidrs=UNSET if allowed_cidrs is None else tuple(allowed_cidrs),
                required_model_tags=UNSET if required_model_tags is None else required_model_tags,
                expires_at=expires_at,
                metadata=UNSET if metadata is None else metadata,
                limits=UNSET if limits is None else limits,
            )
            await self._audit_key(tx, actor, "api_key.update", before, after)
        await self._bus.publish(TOPIC_API_KEY, key_id)
        return after

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

    @staticmethod
    async def _audit_key(
        tx: Transaction, actor: Actor, action: str, before: ApiKeyRecord | None, after: ApiKeyRecord
    ) -> None:
        await audit(
            tx,
            actor,
            action,
            "api_key",
            after.id,
            after.organization_id,
            before=key_summary(before) if before else None,
            after=key_summary(after),
        )
