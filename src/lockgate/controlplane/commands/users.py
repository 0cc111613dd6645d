"""``lockgate users create|list``: the people of an organisation (roles come separately,
through role bindings)."""

from __future__ import annotations

import argparse
import re

from lockgate.controlplane.actions import user_summary
from lockgate.controlplane.commands.errors import UsageError
from lockgate.controlplane.commands.inputs import every, resolve_organization
from lockgate.controlplane.commands.output import Column
from lockgate.controlplane.commands.session import Session
from lockgate.store.repositories.base import MAX_PAGE_SIZE

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")  # as the admin API accepts

USER_COLUMNS = (
    Column("ID", "id"),
    Column("EMAIL", "email"),
    Column("NAME", "name"),
    Column("DISABLED", "is_disabled"),
    Column("CREATED", "created_at"),
)


async def create_user(session: Session, args: argparse.Namespace) -> int:
    if not _EMAIL.fullmatch(args.email.strip()):
        raise UsageError(f"--email {args.email!r}: not an email address")
    org = await resolve_organization(session.store, args.org)
    user = await session.actions.create_user(
        session.actor, org.id, email=args.email, name=args.name
    )
    session.out.record(user_summary(user), USER_COLUMNS)
    return 0


async def list_users(session: Session, args: argparse.Namespace) -> int:
    store = session.store
    org = await resolve_organization(store, args.org)
    users = await every(
        lambda after: store.users.list(organization_id=org.id, limit=MAX_PAGE_SIZE, after=after)
    )
    session.out.records([user_summary(u) for u in users], USER_COLUMNS)
    return 0
