"""Organisations and projects: create, update, delete — each with its audit entry.

Model allow-lists narrow downwards: organisation (the ceiling) ⊇ project ⊇
key, an empty list meaning "no restriction at this level". Setting a
project's list outside its organisation's is refused (422); narrowing an
organisation later is allowed, and the data plane intersects all three, so
nothing outside the new ceiling is callable from the moment it commits.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from lockgate.admission.spec import NO_LIMITS, LimitSpec
from lockgate.controlplane.actions.base import (
    TOPIC_ORGANIZATION,
    TOPIC_PROJECT,
    ActionsBase,
    Actor,
    audit,
    changes,
    check_within,
    organization_summary,
    project_summary,
)
from lockgate.store.errors import Conflict, ConflictReason
from lockgate.store.repositories.base import UNSET, Unchanged
from lockgate.store.repositories.organizations import RemovedContents
from lockgate.tenancy.model import Organization, Project


def _given(value: Any) -> Any:
    """``None`` (not given in a PATCH) as the store's "unchanged" marker."""
    return UNSET if value is None else value


class TenantActions(ActionsBase):
    async def create_organization(
        self,
        actor: Actor,
        name: str,
        *,
        allowed_models: Iterable[str] = (),
        limits: LimitSpec = NO_LIMITS,
        metadata: Mapping[str, Any] | None = None,
    ) -> Organization:
        async with self._store.transaction() as tx:
            org = await tx.organizations.create(
                name=name, allowed_models=allowed_models, limits=limits, metadata=metadata
            )
            await audit(
                tx,
                actor,
                "organization.create",
                "organization",
                org.id,
                org.id,
                after=organization_summary(org),
            )
        return org

    async def update_organization(
        self,
        actor: Actor,
        organization_id: str,
        *,
        name: str | None = None,
        allowed_models: Iterable[str] | None = None,
        limits: LimitSpec | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Organization:
        """Arguments left None stay as they are. Every cached key of the organisation
        is dropped on every replica, so a new ceiling or limit applies at once."""
        async with self._store.transaction() as tx:
            before = await tx.organizations.get(organization_id, for_update=True)
            after = await tx.organizations.update(
                organization_id,
                name=_given(name),
                allowed_models=UNSET if allowed_models is None else tuple(allowed_models),
                limits=_given(limits),
                metadata=_given(metadata),
            )
            old, new = changes(organization_summary(before), organization_summary(after))
            await audit(
                tx,
                actor,
                "organization.update",
                "organization",
                organization_id,
                organization_id,
                before=old,
                after=new,
            )
        await self._bus.publish(TOPIC_ORGANIZATION, organization_id)
        return after

    async def delete_organization(
        self, actor: Actor, organization_id: str, *, force: bool = False
    ) -> tuple[Organization, RemovedContents]:
        """Delete an organisation with its users, service accounts, role bindings and
        upstream secrets; returns it and what went with it. While it has projects
        this is refused (``Conflict``) unless
        ``force``, which deletes the projects and their API keys too (whether the
        caller may force is the caller's check: the admin API allows superadmins only).
        """
        async with self._store.transaction() as tx:
            org = await tx.organizations.get(organization_id, for_update=True)
            if not force and await tx.projects.list(organization_id=organization_id, limit=1):
                raise Conflict(
                    f"organization {organization_id!r} still has projects: delete them first "
                    "(which revokes their API keys), or delete with force=true (superadmin)",
                    reason=ConflictReason.REFERENCE,
                )
            removed = await tx.organizations.delete_with_contents(organization_id)
            await audit(
                tx,
                actor,
                "organization.delete",
                "organization",
                organization_id,
                organization_id,
                before=organization_summary(org),
                after={
                    "forced": force,
                    "deleted_project_ids": list(removed.project_ids),
                    "deleted_api_key_ids": list(removed.api_key_ids),
                    "deleted_users": removed.users,
                    "deleted_service_accounts": removed.service_accounts,
                    "deleted_role_bindings": removed.role_bindings,
                    "deleted_upstream_secrets": removed.upstream_secrets,
                },
            )
        # Every key of the organisation is gone: every replica drops them from its cache.
        await self._bus.publish(TOPIC_ORGANIZATION, organization_id)
        return org, removed

    async def create_project(
        self,
        actor: Actor,
        organization_id: str,
        name: str,
        allowed_models: Iterable[str] = (),
        *,
        limits: LimitSpec = NO_LIMITS,
        model_limits: Mapping[str, LimitSpec] | None = None,
        log_prompts: bool = False,
    ) -> Project:
        """Raises ``OutsideAllowedModels`` for models beyond the organisation's ceiling."""
        models = tuple(allowed_models)
        async with self._store.transaction() as tx:
            org = await tx.organizations.get(organization_id)
            check_within(models, org.allowed_models, param="allowed_models", owner="organization")
            project = await tx.projects.create(
                organization_id=organization_id,
                name=name,
                allowed_models=models,
                limits=limits,
                model_limits=model_limits,
                log_prompts=log_prompts,
            )
            await audit(
                tx,
                actor,
                "project.create",
                "project",
                project.id,
                organization_id,
                after=project_summary(project),
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
        limits: LimitSpec | None = None,
        model_limits: Mapping[str, LimitSpec] | None = None,
        log_prompts: bool | None = None,
    ) -> Project:
        """Rename, re-scope or re-limit a project, or turn its prompt logging on or off;
        its keys' cached grants are dropped everywhere. Arguments left None stay as
        they are."""
        async with self._store.transaction() as tx:
            before = await tx.projects.get(
                project_id, organization_id=organization_id, for_update=True
            )
            models: tuple[str, ...] | Unchanged = UNSET
            if allowed_models is not None:
                models = tuple(allowed_models)
                org = await tx.organizations.get(organization_id)
                check_within(
                    models, org.allowed_models, param="allowed_models", owner="organization"
                )
            after = await tx.projects.update(
                project_id,
                organization_id=organization_id,
                name=_given(name),
                allowed_models=models,
                limits=_given(limits),
                model_limits=_given(model_limits),
                log_prompts=_given(log_prompts),
            )
            old, new = changes(project_summary(before), project_summary(after))
            await audit(
                tx,
                actor,
                "project.update",
                "project",
                project_id,
                organization_id,
                before=old,
                after=new,
            )
        # Cached keys carry the project (models, limits): every replica must reload them.
        await self._bus.publish(TOPIC_PROJECT, project_id)
        return after

    async def delete_project(
        self, actor: Actor, organization_id: str, project_id: str
    ) -> tuple[Project, tuple[str, ...]]:
        """Delete a project and, first, its API keys (a key cannot outlive its project);
        its role bindings go with it. Returns the project and the deleted keys' ids."""
        async with self._store.transaction() as tx:
            project = await tx.projects.get(
                project_id, organization_id=organization_id, for_update=True
            )
            key_ids = tuple(
                await tx.api_keys.delete_for_project(project_id, organization_id=organization_id)
            )
            await tx.projects.delete(project_id, organization_id=organization_id)
            await audit(
                tx,
                actor,
                "project.delete",
                "project",
                project_id,
                organization_id,
                before=project_summary(project),
                after={"deleted_api_key_ids": list(key_ids)},
            )
        # One message drops every cached key of the project on every replica; a later
        # lookup finds no such key (401), wherever the request lands.
        await self._bus.publish(TOPIC_PROJECT, project_id)
        return project, key_ids
