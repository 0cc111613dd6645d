"""``lockgate deployments list|add|remove`` and ``lockgate rollouts show|set|resume``.

The same ``DeploymentActions`` as the admin API: audited as ``cli:<os user>``,
announced on the deployment's bus, so running gateways apply a change within
a second. Engines register through the admin API only (they hold a credential,
not the config).
"""

from __future__ import annotations

import argparse
from typing import Any

from lockgate.controlplane.actions.deployments import (
    DeploymentActions,
    DeploymentInput,
    deployment_summary,
)
from lockgate.controlplane.commands.errors import UsageError
from lockgate.controlplane.commands.output import Column
from lockgate.controlplane.commands.session import Session
from lockgate.routing.registry import serving_entries
from lockgate.store.repositories.deployments import registry_of, rollouts_of

DEPLOYMENT_COLUMNS = (
    Column("MODEL", "model"),
    Column("NAME", "name"),
    Column("BASE URL", "base_url"),
    Column("SOURCE", "source"),
    Column("EXPIRES", "expires_at"),
)
ROLLOUT_COLUMNS = (
    Column("MODEL", "model"),
    Column("DEFAULT", "default_version"),
    Column("CANDIDATE", "candidate"),
    Column("PERCENT", "percent"),
    Column("SHADOW", "shadow_percent"),
    Column("ROLLED BACK", "is_rolled_back"),
    Column("REASON", "reason"),
)


def _actions(session: Session, *, writes: bool) -> DeploymentActions:
    # Read-only commands start no bus, and their actions never publish.
    bus: Any = session.write_access().bus if writes else None
    return DeploymentActions(session.store, bus, session.config)


async def list_deployments(session: Session, args: argparse.Namespace) -> int:
    records: list[dict[str, Any]] = [
        {
            "model": name,
            "name": d.name,
            "base_url": f"{d.scheme}://{d.host}:{d.port}{d.base_path}",
            "source": "config",
            "expires_at": None,
        }
        for name, entry in serving_entries(session.config.models).items()
        for d in entry.deployments
    ]
    for dep in await registry_of(session.store).live():
        expires = dep.expires_at.isoformat() if dep.expires_at else None
        records.append({**deployment_summary(dep), "expires_at": expires})
    chosen = [r for r in records if args.model is None or r["model"] == args.model]
    session.out.records(chosen, DEPLOYMENT_COLUMNS)
    return 0


async def add_deployment(session: Session, args: argparse.Namespace) -> int:
    tags = {}
    for tag in args.tag:
        key, equals, value = tag.partition("=")
        if not equals or not key:
            raise UsageError(f"--tag {tag!r}: write KEY=VALUE")
        tags[key] = value
    spec = DeploymentInput(
        name=args.name,
        base_url=args.base_url,
        upstream_model=args.upstream_model,
        capacity=args.capacity,
        weight=args.weight,
        tags=tags,
    )
    dep = await _actions(session, writes=True).add(session.actor, args.model, spec)
    session.out.record({**deployment_summary(dep), "expires_at": None}, DEPLOYMENT_COLUMNS)
    return 0


async def remove_deployment(session: Session, args: argparse.Namespace) -> int:
    await _actions(session, writes=True).remove(
        session.actor, args.model, args.name, source="admin"
    )
    return 0


async def show_rollouts(session: Session, args: argparse.Namespace) -> int:
    actions = _actions(session, writes=False)
    names = [args.model] if args.model else [m.name for m in session.config.models if m.versions]
    stored = {r.model: r for r in await rollouts_of(session.store).all()}
    states = [actions.rollout_state(name, stored.get(name)) for name in names]
    session.out.records(states, ROLLOUT_COLUMNS)
    return 0


async def set_rollout(session: Session, args: argparse.Namespace) -> int:
    if args.candidate is None and args.percent is None and args.shadow_percent is None:
        raise UsageError("nothing to change: give --candidate, --percent or --shadow-percent")
    for name, value in (("--percent", args.percent), ("--shadow-percent", args.shadow_percent)):
        if value is not None and not 0 <= value <= 100:
            raise UsageError(f"{name} must be between 0 and 100")
    state = await _actions(session, writes=True).set_rollout(
        session.actor,
        args.model,
        candidate=args.candidate,
        percent=args.percent,
        shadow_percent=args.shadow_percent,
    )
    session.out.record(state, ROLLOUT_COLUMNS)
    return 0


async def resume_rollout(session: Session, args: argparse.Namespace) -> int:
    state = await _actions(session, writes=True).resume_rollout(session.actor, args.model)
    session.out.record(state, ROLLOUT_COLUMNS)
    return 0
