"""API keys: the hot-path lookup and the admin operations around it.

The store keeps only the keyed hash of a key's secret (hashing and comparison
are the authenticator's job). ``lookup`` is the data plane's one query per
uncached request is ``lookup_grant``: by primary key, joined on primary keys to
the key's project, organisation and service account. Rotation is one UPDATE whose
right-hand sides read the row as it was, so the old hash moves to
``previous_secret_hash`` atomically, with no window where neither works.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Table, and_, delete, insert, select, update
from sqlalchemy.engine import Row

from lockgate.admission.spec import NO_LIMITS, LimitSpec, parse_limits
from lockgate.store.columns import as_utc, utc_now
from lockgate.store.errors import Conflict
from lockgate.store.repositories.base import (
    UNSET,
    Repository,
    Unchanged,
    changed,
    explained,
    json_object,
    limits_json,
    page,
    require,
    strings,
    tenant_filter,
)
from lockgate.store.repositories.organizations import to_organization
from lockgate.store.repositories.projects import to_project
from lockgate.store.schema import api_keys as _t
from lockgate.store.schema import organizations, projects, service_accounts
from lockgate.tenancy.key_cache import KeyGrant
from lockgate.tenancy.model import ApiKeyRecord, KeyStatus, Scope


def to_api_key(row: Any) -> ApiKeyRecord:
    """``row``: a row of this table, or anything with its columns as attributes."""
    return ApiKeyRecord(
        id=row.id,
        organization_id=row.organization_id,
        project_id=row.project_id,
        name=row.name,
        secret_hash=bytes(row.secret_hash),
        status=KeyStatus(row.status),
        scopes=tuple(Scope(s) for s in row.scopes),
        allowed_models=strings(row.allowed_models),
        created_at=row.created_at,
        expires_at=row.expires_at,
        previous_secret_hash=(
            bytes(row.previous_secret_hash) if row.previous_secret_hash is not None else None
        ),
        previous_expires_at=row.previous_expires_at,
        service_account_id=row.service_account_id,
        allowed_cidrs=strings(row.allowed_cidrs),
        required_model_tags={str(k): str(v) for k, v in (row.required_model_tags or {}).items()},
        metadata=row.metadata,
        updated_at=row.updated_at,
        limits=parse_limits(row.limits),
    )


class _Columns:
    """One table's columns of a joined row, read as attributes (as its own row would be)."""

    __slots__ = ("_row", "_table")

    def __init__(self, row: Row[Any], table: Table) -> None:
        self._row = row
        self._table = table

    def __getattr__(self, name: str) -> Any:
        return self._row._mapping[self._table.c[name]]


class ApiKeys(Repository):
    async def create(
        self,
        *,
        key_id: str,
        organization_id: str,
        project_id: str,
        name: str,
        secret_hash: bytes,
        scopes: Iterable[Scope] = (Scope.INFERENCE,),
        allowed_models: Iterable[str] = (),
        allowed_cidrs: Iterable[str] = (),
        required_model_tags: Mapping[str, str] | None = None,
        expires_at: datetime | None = None,
        service_account_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        status: KeyStatus = KeyStatus.ACTIVE,
        limits: LimitSpec = NO_LIMITS,
    ) -> ApiKeyRecord:
        """Raises ``Conflict`` (DUPLICATE) for a key id already in use, ``NotFound`` if
        the project (or service account) is not in ``organization_id``."""
        record = ApiKeyRecord(
            id=key_id,
            organization_id=organization_id,
            project_id=project_id,
            name=name,
            secret_hash=bytes(secret_hash),
            status=status,
            scopes=tuple(Scope(s) for s in scopes),
            allowed_models=tuple(allowed_models),
            created_at=utc_now(),
            expires_at=None if expires_at is None else as_utc(expires_at),
            service_account_id=service_account_id,
            allowed_cidrs=tuple(allowed_cidrs),
            required_model_tags=dict(required_model_tags or {}),
            metadata=json_object(metadata),
            limits=limits,
        )
        values = {
            "id": record.id,
            "organization_id": organization_id,
            "project_id": project_id,
            "service_account_id": service_account_id,
            "name": name,
            "secret_hash": record.secret_hash,
            "status": status.value,
            "scopes": [s.value for s in record.scopes],
            "allowed_models": list(record.allowed_models),
            "allowed_cidrs": list(record.allowed_cidrs),
            "required_model_tags": record.required_model_tags,
            "metadata": record.metadata,
            "expires_at": record.expires_at,
            "created_at": record.created_at,
            "limits": limits_json(limits),
        }
        try:
            async with self._connector.connect(write=True) as conn:
                await conn.execute(insert(_t).values(values))
        except Conflict as error:
            raise explained(
                error,
                duplicate=f"API key id {key_id!r} is already in use",
                reference=f"project {project_id!r} (or service account {service_account_id!r}) "
                f"not found in organization {organization_id!r}",
            ) from error
        return record

    async def lookup(self, key_id: str) -> ApiKeyRecord | None:
        """The data plane's authentication lookup: any tenant (the key id decides which),
        None when absent. Status and expiry are for the caller to judge."""
        async with self._connector.connect(write=False) as conn:
            row = (await conn.execute(select(_t).where(_t.c.id == key_id))).first()
        return None if row is None else to_api_key(row)

    async def lookup_grant(self, key_id: str) -> KeyGrant | None:
        """``lookup`` plus everything authorising and admitting a request needs: the
        project, the organisation, and whether the key's service account is disabled.
        One statement (primary-key lookup, primary-key joins); None when absent."""
        sa = service_accounts
        statement = (
            select(_t, projects, organizations, sa.c.is_disabled)
            .join(
                projects,
                and_(
                    projects.c.id == _t.c.project_id,
                    projects.c.organization_id == _t.c.organization_id,
                ),
            )
            .join(organizations, organizations.c.id == _t.c.organization_id)
            .outerjoin(
                sa,
                and_(
                    sa.c.id == _t.c.service_account_id, sa.c.organization_id == _t.c.organization_id
                ),
            )
            .where(_t.c.id == key_id)
        )
        async with self._connector.connect(write=False) as conn:
            row = (await conn.execute(statement)).first()
        if row is None:
            return None
        return KeyGrant(
            key=to_api_key(_Columns(row, _t)),
            project=to_project(_Columns(row, projects)),
            organization=to_organization(_Columns(row, organizations)),
            service_account_disabled=bool(row._mapping[sa.c.is_disabled]),
        )

    async def get(
        self, key_id: str, *, organization_id: str | None, for_update: bool = False
    ) -> ApiKeyRecord:
        statement = select(_t).where(
            _t.c.id == key_id, tenant_filter(_t.c.organization_id, organization_id)
        )
        if for_update:
            statement = statement.with_for_update()
        async with self._connector.connect(write=for_update) as conn:
            row = (await conn.execute(statement)).first()
        return to_api_key(require(row, "API key", key_id))

    async def list(
        self,
        *,
        organization_id: str | None,
        project_id: str | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> Sequence[ApiKeyRecord]:
        statement = select(_t).where(tenant_filter(_t.c.organization_id, organization_id))
        if project_id is not None:
            statement = statement.where(_t.c.project_id == project_id)
        async with self._connector.connect(write=False) as conn:
            rows = await conn.execute(page(statement, _t.c.id, limit=limit, after=after))
            return [to_api_key(row) for row in rows]

    async def set_status(
        self, key_id: str, status: KeyStatus, *, organization_id: str | None
    ) -> ApiKeyRecord:
        return await self._update(key_id, organization_id, {"status": status.value})

    async def rotate(
        self,
        key_id: str,
        *,
        organization_id: str | None,
        new_secret_hash: bytes,
        previous_expires_at: datetime,
    ) -> ApiKeyRecord:
        """Make ``new_secret_hash`` current; the old hash keeps working until
        ``previous_expires_at`` (a rotation replaces any earlier previous hash)."""
        return await self._update(
            key_id,
            organization_id,
            {
                "previous_secret_hash": _t.c.secret_hash,
                "secret_hash": bytes(new_secret_hash),
                "previous_expires_at": previous_expires_at,
            },
        )

    async def update(
        self,
        key_id: str,
        *,
        organization_id: str | None,
        name: str | Unchanged = UNSET,
        scopes: Iterable[Scope] | Unchanged = UNSET,
        allowed_models: Iterable[str] | Unchanged = UNSET,
        allowed_cidrs: Iterable[str] | Unchanged = UNSET,
        required_model_tags: Mapping[str, str] | Unchanged = UNSET,
        expires_at: datetime | Unchanged | None = UNSET,
        metadata: Mapping[str, Any] | Unchanged = UNSET,
        limits: LimitSpec | Unchanged = UNSET,
    ) -> ApiKeyRecord:
        values = changed(
            name=name,
            scopes=scopes if scopes is UNSET else [Scope(s).value for s in scopes],
            allowed_models=allowed_models if allowed_models is UNSET else list(allowed_models),
            allowed_cidrs=allowed_cidrs if allowed_cidrs is UNSET else list(allowed_cidrs),
            required_model_tags=(
                required_model_tags
                if required_model_tags is UNSET
                else json_object(required_model_tags)
            ),
            expires_at=expires_at,
            metadata=metadata if metadata is UNSET else json_object(metadata),
            limits=limits if limits is UNSET else limits_json(limits),
        )
        if not values:
            return await self.get(key_id, organization_id=organization_id)
        return await self._update(key_id, organization_id, values)

    async def ids_for_service_account(
        self, service_account_id: str, *, organization_id: str | None
    ) -> Sequence[str]:
        """Every key acting for the service account (whatever its status), by id."""
        statement = (
            select(_t.c.id)
            .where(
                _t.c.service_account_id == service_account_id,
                tenant_filter(_t.c.organization_id, organization_id),
            )
            .order_by(_t.c.id)
        )
        async with self._connector.connect(write=False) as conn:
            return [str(key_id) for key_id in (await conn.execute(statement)).scalars()]

    async def revoke_for_service_account(
        self, service_account_id: str, *, organization_id: str | None
    ) -> Sequence[str]:
        """Revoke every key acting for the service account and detach them from it (so
        it can be deleted while the revoked keys stay listed); returns their ids."""
        statement = (
            update(_t)
            .where(
                _t.c.service_account_id == service_account_id,
                tenant_filter(_t.c.organization_id, organization_id),
            )
            .values(status=KeyStatus.REVOKED.value, service_account_id=None, updated_at=utc_now())
            .returning(_t.c.id)
        )
        async with self._connector.connect(write=True) as conn:
            return sorted(str(key_id) for key_id in (await conn.execute(statement)).scalars())

    async def delete_for_project(
        self, project_id: str, *, organization_id: str | None
    ) -> Sequence[str]:
        """Delete every key of the project (a key cannot outlive its project); their ids."""
        statement = (
            delete(_t)
            .where(
                _t.c.project_id == project_id,
                tenant_filter(_t.c.organization_id, organization_id),
            )
            .returning(_t.c.id)
        )
        async with self._connector.connect(write=True) as conn:
            return sorted(str(key_id) for key_id in (await conn.execute(statement)).scalars())

    async def delete(self, key_id: str, *, organization_id: str | None) -> None:
        statement = (
            delete(_t)
            .where(_t.c.id == key_id, tenant_filter(_t.c.organization_id, organization_id))
            .returning(_t.c.id)
        )
        async with self._connector.connect(write=True) as conn:
            row = (await conn.execute(statement)).first()
        require(row, "API key", key_id)

    async def _update(
        self, key_id: str, organization_id: str | None, values: dict[str, Any]
    ) -> ApiKeyRecord:
        statement = (
            update(_t)
            .where(_t.c.id == key_id, tenant_filter(_t.c.organization_id, organization_id))
            .values({**values, "updated_at": utc_now()})
            .returning(*_t.c)
        )
        async with self._connector.connect(write=True) as conn:
            row = (await conn.execute(statement)).first()
        return to_api_key(require(row, "API key", key_id))
