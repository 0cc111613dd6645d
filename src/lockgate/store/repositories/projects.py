"""Projects: an organisation's unit of access — API keys belong to one."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import delete, insert, select, update

from lockgate.admission.spec import NO_LIMITS, LimitSpec, parse_limits
from lockgate.store.columns import new_id, utc_now
from lockgate.store.errors import Conflict, ConflictReason
from lockgate.store.repositories.base import (
    UNSET,
    Repository,
    Unchanged,
    changed,
    explained,
    json_object,
    limits_json,
    model_limits_json,
    page,
    read_model_limits,
    require,
    strings,
    tenant_filter,
)
from lockgate.store.schema import projects as _t
from lockgate.tenancy.model import Project


def to_project(row: Any) -> Project:
    """``row``: a row of this table, or anything with its columns as attributes."""
    return Project(
        id=row.id,
        organization_id=row.organization_id,
        name=row.name,
        created_at=row.created_at,
        allowed_models=strings(row.allowed_models),
        metadata=row.metadata,
        limits=parse_limits(row.limits),
        model_limits=read_model_limits(row.model_limits),
        log_prompts=bool(row.log_prompts),
    )


class Projects(Repository):
    async def create(
        self,
        *,
        organization_id: str,
        name: str,
        allowed_models: Iterable[str] = (),
        metadata: Mapping[str, Any] | None = None,
        limits: LimitSpec = NO_LIMITS,
        model_limits: Mapping[str, LimitSpec] | None = None,
        log_prompts: bool = False,
    ) -> Project:
        """Raises ``NotFound`` if the organisation does not exist, ``Conflict`` if the
        name is taken in it."""
        record = Project(
            id=new_id("proj"),
            organization_id=organization_id,
            name=name,
            created_at=utc_now(),
            allowed_models=tuple(allowed_models),
            metadata=json_object(metadata),
            limits=limits,
            model_limits=dict(model_limits or {}),
            log_prompts=log_prompts,
        )
        try:
            async with self._connector.connect(write=True) as conn:
                await conn.execute(
                    insert(_t).values(
                        id=record.id,
                        organization_id=organization_id,
                        name=name,
                        allowed_models=list(record.allowed_models),
                        metadata=record.metadata,
                        created_at=record.created_at,
                        limits=limits_json(limits),
                        model_limits=model_limits_json(record.model_limits),
                        log_prompts=log_prompts,
                    )
                )
        except Conflict as error:
            raise explained(
                error,
                duplicate=f"a project named {name!r} already exists in the organization",
                reference=f"organization {organization_id!r} not found",
            ) from error
        return record

    async def get(
        self, project_id: str, *, organization_id: str | None, for_update: bool = False
    ) -> Project:
        statement = select(_t).where(
            _t.c.id == project_id, tenant_filter(_t.c.organization_id, organization_id)
        )
        if for_update:
            statement = statement.with_for_update()
        async with self._connector.connect(write=for_update) as conn:
            row = (await conn.execute(statement)).first()
        return to_project(require(row, "project", project_id))

    async def list(
        self, *, organization_id: str | None, limit: int = 100, after: str | None = None
    ) -> Sequence[Project]:
        statement = select(_t).where(tenant_filter(_t.c.organization_id, organization_id))
        async with self._connector.connect(write=False) as conn:
            rows = await conn.execute(page(statement, _t.c.id, limit=limit, after=after))
            return [to_project(row) for row in rows]

    async def update(
        self,
        project_id: str,
        *,
        organization_id: str | None,
        name: str | Unchanged = UNSET,
        allowed_models: Iterable[str] | Unchanged = UNSET,
        metadata: Mapping[str, Any] | Unchanged = UNSET,
        limits: LimitSpec | Unchanged = UNSET,
        model_limits: Mapping[str, LimitSpec] | Unchanged = UNSET,
        log_prompts: bool | Unchanged = UNSET,
    ) -> Project:
        values = changed(
            log_prompts=log_prompts,
            name=name,
            allowed_models=allowed_models if allowed_models is UNSET else list(allowed_models),
            metadata=metadata if metadata is UNSET else json_object(metadata),
            limits=limits if limits is UNSET else limits_json(limits),
            model_limits=model_limits if model_limits is UNSET else model_limits_json(model_limits),
        )
        if not values:
            return await self.get(project_id, organization_id=organization_id)
        statement = (
            update(_t)
            .where(_t.c.id == project_id, tenant_filter(_t.c.organization_id, organization_id))
            .values(values)
            .returning(*_t.c)
        )
        try:
            async with self._connector.connect(write=True) as conn:
                row = (await conn.execute(statement)).first()
        except Conflict as error:
            raise Conflict(
                f"a project named {name!r} already exists in the organization",
                reason=error.reason,
            ) from error
        return to_project(require(row, "project", project_id))

    async def delete(self, project_id: str, *, organization_id: str | None) -> None:
        """Removes the project's role bindings with it; raises ``Conflict`` (REFERENCE)
        while API keys still belong to it (delete them first)."""
        statement = (
            delete(_t)
            .where(_t.c.id == project_id, tenant_filter(_t.c.organization_id, organization_id))
            .returning(_t.c.id)
        )
        try:
            async with self._connector.connect(write=True) as conn:
                row = (await conn.execute(statement)).first()
        except Conflict as error:
            raise Conflict(
                f"project {project_id!r} still has API keys", reason=ConflictReason.REFERENCE
            ) from error
        require(row, "project", project_id)
