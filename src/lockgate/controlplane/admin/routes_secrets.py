"""Upstream secrets: an organisation's provider credentials, write-only.

PUT stores a value encrypted (409 ``master_key_not_configured`` when the
deployment has no master key); GET lists names and times; DELETE removes one.
No response ever contains a value or ciphertext, and audit entries record
the name and key version only. All three need ``secret.manage``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from lockgate.controlplane.admin.deps import Caller, Services
from lockgate.controlplane.admin.schemas import Page, UpstreamSecretIn, UpstreamSecretOut
from lockgate.store.repositories.upstream_secrets import UpstreamSecret, UpstreamSecretInfo
from lockgate.tenancy.rbac import Permission

router = APIRouter(prefix="/admin/v1/organizations/{org_id}/upstream_secrets")
PageSize = Annotated[int, Query(ge=1, le=500)]
SecretName = Annotated[
    str,
    Path(
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="letters, digits, '_', '.', '-'; e.g. openai-prod",
    ),
]


def _out(secret: UpstreamSecret | UpstreamSecretInfo) -> UpstreamSecretOut:
    return UpstreamSecretOut(
        id=secret.id,
        name=secret.name,
        key_version=secret.key_version,
        created_at=secret.created_at,
        updated_at=secret.updated_at,
    )


@router.put("/{name}")
async def put_upstream_secret(
    org_id: str, name: SecretName, body: UpstreamSecretIn, caller: Caller, svc: Services
) -> UpstreamSecretOut:
    """Create or replace the secret; the value is encrypted before it is stored."""
    caller.require(Permission.SECRET_MANAGE, org_id)
    secret = await svc.actions.put_upstream_secret(
        caller.actor, org_id, name, body.value.get_secret_value()
    )
    return _out(secret)


@router.get("")
async def list_upstream_secrets(
    org_id: str, caller: Caller, svc: Services, limit: PageSize = 100, after: str | None = None
) -> Page[UpstreamSecretOut]:
    """Names, key versions and times, by name (``after``: the last name seen)."""
    caller.require(Permission.SECRET_MANAGE, org_id)
    secrets = await svc.store.upstream_secrets.list(
        organization_id=org_id, limit=limit + 1, after=after
    )
    data = [_out(s) for s in secrets[:limit]]
    return Page(data=data, has_more=len(secrets) > limit, last_id=data[-1].name if data else None)


@router.delete("/{name}")
async def delete_upstream_secret(
    org_id: str, name: SecretName, caller: Caller, svc: Services
) -> UpstreamSecretOut:
    caller.require(Permission.SECRET_MANAGE, org_id)
    return _out(await svc.actions.delete_upstream_secret(caller.actor, org_id, name))
