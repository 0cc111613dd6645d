"""``lockgate keys create|list|update|rotate|revoke|disable|enable``.

Listings show what ``key_summary`` shows (id, prefix, name, status, scopes,
expiry, the previous secret's expiry after a rotation), never a secret or a
hash. A new secret is printed once, by the command that made it.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from lockgate.controlplane.actions import key_summary
from lockgate.controlplane.commands.errors import UsageError
from lockgate.controlplane.commands.inputs import (
    every,
    parse_cidrs,
    parse_duration,
    parse_grace,
    parse_key_id,
    parse_limits,
    parse_tags,
    resolve_organization,
    resolve_project,
)
from lockgate.controlplane.commands.output import Column
from lockgate.controlplane.commands.session import Session
from lockgate.store.repositories.base import MAX_PAGE_SIZE, UNSET, Unchanged
from lockgate.tenancy.model import KeyStatus, Scope

KEY_COLUMNS = (
    Column("ID", "id"),
    Column("NAME", "name"),
    Column("PROJECT", "project_id"),
    Column("STATUS", "status"),
    Column("SCOPES", "scopes"),
    Column("ALLOWED MODELS", "allowed_models"),
    Column("ALLOWED NETWORKS", "allowed_cidrs"),
    Column("REQUIRED TAGS", "required_model_tags"),
    Column("EXPIRES", "expires_at"),
    Column("OLD SECRET UNTIL", "previous_expires_at"),
)
KEY_FIELDS = (
    Column("id", "id"),
    Column("prefix", "prefix"),
    *KEY_COLUMNS[1:],
    Column("limits", "limits"),
)
_SHOWN_ONCE = "It is shown only now; store it somewhere safe:"


async def create(session: Session, args: argparse.Namespace) -> int:
    cidrs = parse_cidrs(args.allow_cidr)
    tags = parse_tags(args.require_tag)
    expires_at = None
    if args.expires_in is not None:
        expires_at = datetime.now(UTC) + parse_duration(args.expires_in, "--expires-in")
    org = await resolve_organization(session.store, args.org)
    project = await resolve_project(session.store, org.id, args.project)
    key, full_key = await session.actions.create_api_key(
        session.actor,
        organization_id=org.id,
        project_id=project.id,
        name=args.name,
        scopes=[Scope(s) for s in args.scope or [Scope.INFERENCE]],
        allowed_models=args.allow_model,
        allowed_cidrs=cidrs,
        required_model_tags=tags,
        expires_at=expires_at,
    )
    session.out.secret(f"API key created. {_SHOWN_ONCE}", full_key)
    session.out.record({**key_summary(key), "key": full_key}, KEY_FIELDS)
    return 0


async def list_keys(session: Session, args: argparse.Namespace) -> int:
    store = session.store
    org = await resolve_organization(store, args.org)
    project_id = None
    if args.project is not None:
        project_id = (await resolve_project(store, org.id, args.project)).id
    keys = await every(
        lambda after: store.api_keys.list(
            organization_id=org.id, project_id=project_id, limit=MAX_PAGE_SIZE, after=after
        )
    )
    session.out.records([key_summary(k) for k in keys], KEY_COLUMNS)
    return 0


async def update(session: Session, args: argparse.Namespace) -> int:
    """Options left out stay as they are; a repeated option replaces the whole list."""
    key_id = parse_key_id(args.key_id)
    values = (args.name, args.scope, args.allow_model, args.allow_cidr, args.require_tag)
    clears = (args.any_model, args.any_network, args.no_required_tags, args.never_expires)
    if all(v is None for v in (*values, args.expires_in, args.limit)) and not (
        any(clears) or args.no_limits
    ):
        raise UsageError("nothing to change: give at least one option (see --help)")
    cidrs = None
    if args.any_network or args.allow_cidr is not None:
        cidrs = parse_cidrs(args.allow_cidr or [])
    tags = None
    if args.no_required_tags or args.require_tag is not None:
        tags = parse_tags(args.require_tag or [])
    limits = None
    if args.no_limits or args.limit is not None:
        limits = parse_limits(args.limit or [])
    expires_at: datetime | Unchanged | None = None if args.never_expires else UNSET
    if args.expires_in is not None:
        expires_at = datetime.now(UTC) + parse_duration(args.expires_in, "--expires-in")
    org = await resolve_organization(session.store, args.org)
    key = await session.actions.update_api_key(
        session.actor,
        organization_id=org.id,
        key_id=key_id,
        name=args.name,
        scopes=None if args.scope is None else [Scope(s) for s in args.scope],
        allowed_models=[] if args.any_model else args.allow_model,
        allowed_cidrs=cidrs,
        required_model_tags=tags,
        expires_at=expires_at,
        limits=limits,
    )
    session.out.record(key_summary(key), KEY_FIELDS)
    return 0


async def rotate(session: Session, args: argparse.Namespace) -> int:
    key_id = parse_key_id(args.key_id)
    grace = parse_grace(args.grace)
    org = await resolve_organization(session.store, args.org)
    key, full_key = await session.actions.rotate_api_key(
        session.actor, organization_id=org.id, key_id=key_id, grace=grace
    )
    session.out.secret(f"New secret issued. {_SHOWN_ONCE}", full_key)
    session.out.record({**key_summary(key), "key": full_key}, KEY_FIELDS)
    return 0


async def revoke(session: Session, args: argparse.Namespace) -> int:
    return await _set_status(session, args, KeyStatus.REVOKED)


async def disable(session: Session, args: argparse.Namespace) -> int:
    return await _set_status(session, args, KeyStatus.DISABLED)


async def enable(session: Session, args: argparse.Namespace) -> int:
    return await _set_status(session, args, KeyStatus.ACTIVE)


async def _set_status(session: Session, args: argparse.Namespace, status: KeyStatus) -> int:
    key_id = parse_key_id(args.key_id)
    org = await resolve_organization(session.store, args.org)
    key = await session.actions.set_api_key_status(
        session.actor, organization_id=org.id, key_id=key_id, status=status
    )
    session.out.record(key_summary(key), KEY_FIELDS)
    return 0
