"""``lockgate orgs create|list|update`` and ``lockgate projects create|list|update|delete``."""

from __future__ import annotations

import argparse
from typing import Any

from lockgate.admission.spec import LimitSpec
from lockgate.controlplane.commands.errors import UsageError
from lockgate.controlplane.commands.inputs import (
    every,
    parse_limits,
    resolve_organization,
    resolve_project,
)
from lockgate.controlplane.commands.output import Column
from lockgate.controlplane.commands.session import Session
from lockgate.store.repositories.base import MAX_PAGE_SIZE
from lockgate.tenancy.model import Organization, Project

ORG_COLUMNS = (Column("ID", "id"), Column("NAME", "name"), Column("CREATED", "created_at"))
ORG_FIELDS = (
    *ORG_COLUMNS[:2],
    Column("ALLOWED MODELS", "allowed_models"),
    Column("LIMITS", "limits"),
    ORG_COLUMNS[2],
)
PROJECT_COLUMNS = (
    Column("ID", "id"),
    Column("NAME", "name"),
    Column("ALLOWED MODELS", "allowed_models"),
    Column("CREATED", "created_at"),
)
PROJECT_FIELDS = (
    *PROJECT_COLUMNS[:3],
    Column("LIMITS", "limits"),
    Column("MODEL LIMITS", "model_limits"),
    Column("LOG PROMPTS", "log_prompts"),
    PROJECT_COLUMNS[3],
)
DELETED_PROJECT_FIELDS = (*PROJECT_COLUMNS[:2], Column("DELETED KEYS", "deleted_api_key_ids"))


def organization_record(org: Organization) -> dict[str, Any]:
    return {
        "id": org.id,
        "name": org.name,
        "allowed_models": list(org.allowed_models),
        "limits": org.limits.to_json(),
        "created_at": org.created_at.isoformat(),
    }


def project_record(project: Project) -> dict[str, Any]:
    return {
        "id": project.id,
        "organization_id": project.organization_id,
        "name": project.name,
        "allowed_models": list(project.allowed_models),
        "limits": project.limits.to_json(),
        "log_prompts": project.log_prompts,
        "created_at": project.created_at.isoformat(),
    }


async def create_organization(session: Session, args: argparse.Namespace) -> int:
    org = await session.actions.create_organization(session.actor, args.name)
    session.out.record(organization_record(org), ORG_COLUMNS)
    return 0


async def list_organizations(session: Session, args: argparse.Namespace) -> int:
    store = session.store
    orgs = await every(lambda after: store.organizations.list(limit=MAX_PAGE_SIZE, after=after))
    session.out.records([organization_record(o) for o in orgs], ORG_COLUMNS)
    return 0


async def update_organization(session: Session, args: argparse.Namespace) -> int:
    """Options left out stay as they are; ``--any-model``/``--no-limits`` clear."""
    given = (args.name, args.allow_model, args.limit)
    if all(v is None for v in given) and not (args.any_model or args.no_limits):
        raise UsageError(
            "nothing to change: give --name, --allow-model, --limit or a --no-… option"
        )
    limits = parse_limits(args.limit) if args.limit is not None else None
    org = await resolve_organization(session.store, args.org)
    updated = await session.actions.update_organization(
        session.actor,
        org.id,
        name=args.name,
        allowed_models=[] if args.any_model else args.allow_model,
        limits=parse_limits([]) if args.no_limits else limits,
    )
    session.out.record(organization_record(updated), ORG_FIELDS)
    return 0


async def create_project(session: Session, args: argparse.Namespace) -> int:
    org = await resolve_organization(session.store, args.org)
    project = await session.actions.create_project(
        session.actor, org.id, args.name, allowed_models=args.allow_model
    )
    session.out.record(project_record(project), PROJECT_COLUMNS)
    return 0


async def list_projects(session: Session, args: argparse.Namespace) -> int:
    store = session.store
    org = await resolve_organization(store, args.org)
    projects = await every(
        lambda after: store.projects.list(organization_id=org.id, limit=MAX_PAGE_SIZE, after=after)
    )
    session.out.records([project_record(p) for p in projects], PROJECT_COLUMNS)
    return 0


async def update_project(session: Session, args: argparse.Namespace) -> int:
    """Options left out stay as they are; ``--any-model``/``--no-limits`` clear.

    Takes effect on every running gateway within a second (the project's keys reload).
    """
    given = (args.name, args.allow_model, args.limit, args.model_limit, args.log_prompts)
    if all(v is None for v in given) and not (args.any_model or args.no_limits):
        raise UsageError(
            "nothing to change: give --name, --allow-model, --limit, --model-limit, "
            "--log-prompts or a --no-… option"
        )
    limits = parse_limits(args.limit) if args.limit is not None else None
    model_limits = parse_model_limits(args.model_limit) if args.model_limit else None
    org = await resolve_organization(session.store, args.org)
    project = await resolve_project(session.store, org.id, args.project)
    updated = await session.actions.update_project(
        session.actor,
        org.id,
        project.id,
        name=args.name,
        allowed_models=[] if args.any_model else args.allow_model,
        limits=parse_limits([]) if args.no_limits else limits,
        model_limits=model_limits,
        log_prompts=None if args.log_prompts is None else args.log_prompts == "on",
    )
    record = {
        **project_record(updated),
        "model_limits": {m: spec.to_json() for m, spec in updated.model_limits.items()},
    }
    session.out.record(record, PROJECT_FIELDS)
    return 0


def parse_model_limits(values: list[str]) -> dict[str, LimitSpec]:
    """``--model-limit MODEL:name=value`` options, grouped by model."""
    grouped: dict[str, list[str]] = {}
    for value in values:
        model, sep, limit = value.partition(":")
        if not sep or not model or not limit:
            raise UsageError(
                f"--model-limit {value!r}: use MODEL:name=value, e.g. gpt-4o:tokens_per_minute=9000"
            )
        grouped.setdefault(model, []).append(limit)
    return {model: parse_limits(limits) for model, limits in grouped.items()}


async def delete_project(session: Session, args: argparse.Namespace) -> int:
    """Deletes the project's keys with it; running gateways drop them within a second."""
    org = await resolve_organization(session.store, args.org)
    project = await resolve_project(session.store, org.id, args.project)
    deleted, key_ids = await session.actions.delete_project(session.actor, org.id, project.id)
    record = {**project_record(deleted), "deleted_api_key_ids": list(key_ids)}
    session.out.record(record, DELETED_PROJECT_FIELDS)
    return 0
