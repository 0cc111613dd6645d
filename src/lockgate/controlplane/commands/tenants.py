"""``lockgate orgs create|list`` and ``lockgate projects create|list``."""

from __future__ import annotations

import argparse
from typing import Any

from lockgate.controlplane.commands.inputs import every, resolve_organization
from lockgate.controlplane.commands.output import Column
from lockgate.controlplane.commands.session import Session
from lockgate.store.repositories.base import MAX_PAGE_SIZE
from lockgate.tenancy.model import Organization, Project

ORG_COLUMNS = (Column("ID", "id"), Column("NAME", "name"), Column("CREATED", "created_at"))
PROJECT_COLUMNS = (
    Column("ID", "id"),
    Column("NAME", "name"),
    Column("ALLOWED MODELS", "allowed_models"),
    Column("CREATED", "created_at"),
)


def organization_record(org: Organization) -> dict[str, Any]:
    return {"id": org.id, "name": org.name, "created_at": org.created_at.isoformat()}


def project_record(project: Project) -> dict[str, Any]:
    return {
        "id": project.id,
        "organization_id": project.organization_id,
        "name": project.name,
        "allowed_models": list(project.allowed_models),
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
