"""Users of an organisation: people, who hold roles through role bindings.

Users are organisation-level: reading them needs ``member.read`` and changing
them ``member.manage``, both org-wide (project admins manage bindings on their
project, not the people themselves). Emails are unique per organisation,
case-insensitively.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from lockgate.controlplane.actions import user_summary
from lockgate.controlplane.admin.deps import Caller, Services
from lockgate.controlplane.admin.schemas import Page, UserIn, UserOut, UserPatch
from lockgate.tenancy.model import User
from lockgate.tenancy.rbac import Permission

router = APIRouter(prefix="/admin/v1/organizations/{org_id}/users")
PageSize = Annotated[int, Query(ge=1, le=500)]


def _user(user: User) -> UserOut:
    return UserOut.model_validate(user_summary(user))


@router.post("", status_code=201)
async def create_user(org_id: str, body: UserIn, caller: Caller, svc: Services) -> UserOut:
    """409 ``conflict`` if the email is already a user of the organisation."""
    caller.require(Permission.MEMBER_MANAGE, org_id)
    user = await svc.actions.create_user(caller.actor, org_id, email=body.email, name=body.name)
    return _user(user)


@router.get("")
async def list_users(
    org_id: str, caller: Caller, svc: Services, limit: PageSize = 100, after: str | None = None
) -> Page[UserOut]:
    caller.require(Permission.MEMBER_READ, org_id)
    users = await svc.store.users.list(organization_id=org_id, limit=limit + 1, after=after)
    data = [_user(u) for u in users[:limit]]
    return Page(data=data, has_more=len(users) > limit, last_id=data[-1].id if data else None)


@router.get("/{user_id}")
async def get_user(org_id: str, user_id: str, caller: Caller, svc: Services) -> UserOut:
    caller.require(Permission.MEMBER_READ, org_id)
    return _user(await svc.store.users.get(user_id, organization_id=org_id))


@router.patch("/{user_id}")
async def update_user(
    org_id: str, user_id: str, body: UserPatch, caller: Caller, svc: Services
) -> UserOut:
    caller.require(Permission.MEMBER_MANAGE, org_id)
    user = await svc.actions.update_user(
        caller.actor, org_id, user_id, name=body.name, is_disabled=body.is_disabled
    )
    return _user(user)


@router.delete("/{user_id}")
async def delete_user(org_id: str, user_id: str, caller: Caller, svc: Services) -> UserOut:
    """Deletes the user and every role binding they hold."""
    caller.require(Permission.MEMBER_MANAGE, org_id)
    return _user(await svc.actions.delete_user(caller.actor, org_id, user_id))
