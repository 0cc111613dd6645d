"""Users, service accounts and role bindings: the principals and the roles they hold.

Disabling a service account stops its keys everywhere: the admin API reads the
account on every call, and the data plane's cached grants of its keys are
dropped (each key is published), so the next request reloads the grant with
the account's disabled flag and is refused. Deleting one revokes its keys.
"""

from __future__ import annotations

from lockgate.controlplane.actions.base import (
    ActionsBase,
    Actor,
    audit,
    changes,
    service_account_summary,
    user_summary,
)
from lockgate.store.repositories.base import UNSET
from lockgate.tenancy.model import PrincipalKind, Role, RoleBinding, ServiceAccount, User


class PrincipalActions(ActionsBase):
    async def create_user(
        self, actor: Actor, organization_id: str, *, email: str, name: str
    ) -> User:
        """Raises ``Conflict`` if the email is already a user of the organisation."""
        async with self._store.transaction() as tx:
            user = await tx.users.create(organization_id=organization_id, email=email, name=name)
            await audit(
                tx, actor, "user.create", "user", user.id, organization_id, after=user_summary(user)
            )
        return user

    async def update_user(
        self,
        actor: Actor,
        organization_id: str,
        user_id: str,
        *,
        name: str | None = None,
        is_disabled: bool | None = None,
    ) -> User:
        async with self._store.transaction() as tx:
            before = await tx.users.get(user_id, organization_id=organization_id, for_update=True)
            after = await tx.users.update(
                user_id,
                organization_id=organization_id,
                name=UNSET if name is None else name,
                is_disabled=UNSET if is_disabled is None else is_disabled,
            )
            old, new = changes(user_summary(before), user_summary(after))
            await audit(
                tx, actor, "user.update", "user", user_id, organization_id, before=old, after=new
            )
        return after

    async def delete_user(self, actor: Actor, organization_id: str, user_id: str) -> User:
        """The user and every role binding they hold, in one transaction."""
        async with self._store.transaction() as tx:
            user = await tx.users.get(user_id, organization_id=organization_id, for_update=True)
            await tx.users.delete(user_id, organization_id=organization_id)
            await audit(
                tx,
                actor,
                "user.delete",
                "user",
                user_id,
                organization_id,
                before=user_summary(user),
            )
        return user

    async def create_service_account(
        self, actor: Actor, organization_id: str, name: str
    ) -> ServiceAccount:
        async with self._store.transaction() as tx:
            account = await tx.service_accounts.create(organization_id=organization_id, name=name)
            await audit(
                tx,
                actor,
                "service_account.create",
                "service_account",
                account.id,
                organization_id,
                after=service_account_summary(account),
            )
        return account

    async def update_service_account(
        self,
        actor: Actor,
        organization_id: str,
        service_account_id: str,
        *,
        name: str | None = None,
        is_disabled: bool | None = None,
    ) -> ServiceAccount:
        """Rename, disable or re-enable; its keys' cached grants are dropped everywhere."""
        async with self._store.transaction() as tx:
            accounts = tx.service_accounts
            before = await accounts.get(
                service_account_id, organization_id=organization_id, for_update=True
            )
            after = await accounts.update(
                service_account_id,
                organization_id=organization_id,
                name=UNSET if name is None else name,
                is_disabled=UNSET if is_disabled is None else is_disabled,
            )
            key_ids = await tx.api_keys.ids_for_service_account(
                service_account_id, organization_id=organization_id
            )
            old, new = changes(service_account_summary(before), service_account_summary(after))
            await audit(
                tx,
                actor,
                "service_account.update",
                "service_account",
                service_account_id,
                organization_id,
                before=old,
                after=new,
            )
        if before.is_disabled != after.is_disabled:
            await self._publish_keys(key_ids)
        return after

    async def delete_service_account(
        self, actor: Actor, organization_id: str, service_account_id: str
    ) -> tuple[ServiceAccount, tuple[str, ...]]:
        """Revoke the account's keys (they stay listed, revoked), then delete it with
        its role bindings. Returns the account and the revoked keys' ids."""
        async with self._store.transaction() as tx:
            account = await tx.service_accounts.get(
                service_account_id, organization_id=organization_id, for_update=True
            )
            key_ids = tuple(
                await tx.api_keys.revoke_for_service_account(
                    service_account_id, organization_id=organization_id
                )
            )
            await tx.service_accounts.delete(service_account_id, organization_id=organization_id)
            await audit(
                tx,
                actor,
                "service_account.delete",
                "service_account",
                service_account_id,
                organization_id,
                before=service_account_summary(account),
                after={"revoked_api_key_ids": list(key_ids)},
            )
        await self._publish_keys(key_ids)
        return account, key_ids

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
            await audit(
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

    async def delete_role_binding(
        self, actor: Actor, organization_id: str, binding_id: str
    ) -> RoleBinding:
        """Revoke a role; admin calls check bindings per request, so it applies at once."""
        async with self._store.transaction() as tx:
            binding = await tx.role_bindings.get(binding_id, organization_id=organization_id)
            await tx.role_bindings.delete(binding_id, organization_id=organization_id)
            await audit(
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
