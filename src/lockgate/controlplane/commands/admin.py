"""``lockgate admin bootstrap``: the deployment's first superadmin key, printed once."""

from __future__ import annotations

import argparse

from lockgate.controlplane.actions import key_summary
from lockgate.controlplane.bootstrap import bootstrap_superadmin
from lockgate.controlplane.commands.output import Column
from lockgate.controlplane.commands.session import Session

_FIELDS = (
    Column("organization", "organization_name"),
    Column("project", "project_name"),
    Column("service account", "service_account_name"),
    Column("role", "role"),
    Column("key id", "id"),
    Column("scopes", "scopes"),
)


async def bootstrap(session: Session, args: argparse.Namespace) -> int:
    writer = session.write_access()
    result = await bootstrap_superadmin(
        session.store,
        writer.bus,
        writer.pepper,
        session.actor,
        organization_name=args.org,
        force=args.force,
    )
    record = {
        **key_summary(result.api_key),
        "key": result.key,
        "organization_name": result.organization.name,
        "project_name": result.project.name,
        "service_account_name": result.service_account.name,
        "role": result.role_binding.role.value,
        "role_binding_id": result.role_binding.id,
    }
    session.out.secret(
        "Superadmin API key created. It is shown only now; store it somewhere safe:", result.key
    )
    session.out.record(record, _FIELDS)
    return 0
