"""The deployment's first superadmin credential, created once by an operator on the host.

A fresh deployment has no principal that may call the admin API, and a
built-in default credential would be a default password under another name.
So the operator, who can already reach the database, runs
``lockgate admin bootstrap``: it creates an organisation (``operators``), a
project ``admin``, a service account ``bootstrap-admin`` bound to the
SUPERADMIN role deployment-wide, and an API key with the ``admin`` and
``inference`` scopes acting for that account. The key is returned once.

Everything happens in one transaction with one audit entry per created object,
so a failure leaves nothing half-made. Pieces that already exist (a second run
with ``force``, or an organisation the operator created earlier) are reused,
not duplicated, and not audited again.

Refusing a second bootstrap is checked twice: up front, for a clear message,
and again after the audit entries are appended. On PostgreSQL the first append
takes the audit lock, which a concurrent bootstrap holds until it commits, so
the second check sees its binding (READ COMMITTED) and rolls this one back. On
SQLite the transaction holds the database's write lock from the start.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from lockgate.controlplane.actions import TOPIC_API_KEY, Actor, key_summary
from lockgate.invalidation.bus import InvalidationBus
from lockgate.store.repositories.base import MAX_PAGE_SIZE
from lockgate.store.store import Store, Transaction
from lockgate.tenancy.keys import generate_key, hash_secret
from lockgate.tenancy.model import (
    ApiKeyRecord,
    Organization,
    PrincipalKind,
    Project,
    Role,
    RoleBinding,
    Scope,
    ServiceAccount,
)

DEFAULT_ORGANIZATION = "operators"
ADMIN_PROJECT = "admin"
SERVICE_ACCOUNT = "bootstrap-admin"
KEY_NAME = "bootstrap superadmin"


class _Record(Protocol):
    @property
    def id(self) -> str: ...


_R = TypeVar("_R", bound=_Record)


class AlreadyBootstrapped(Exception):
    """A superadmin binding exists and ``force`` was not given; nothing was changed."""


@dataclass(frozen=True, slots=True)
class BootstrapResult:
    organization: Organization
    project: Project
    service_account: ServiceAccount
    role_binding: RoleBinding
    api_key: ApiKeyRecord
    key: str  # the full key string: show it once, it is not stored anywhere


async def bootstrap_superadmin(
    store: Store,
    bus: InvalidationBus,
    pepper: bytes,
    actor: Actor,
    *,
    organization_name: str = DEFAULT_ORGANIZATION,
    force: bool = False,
) -> BootstrapResult:
    """Create (or, with ``force``, add) a superadmin credential; see the module docstring.

    Raises ``AlreadyBootstrapped`` when a superadmin binding exists and ``force``
    is false, ``ValueError`` if the ``bootstrap-admin`` account exists but is
    disabled, and ``StoreError``s from the store. The invalidation for the new
    key id is published after commit (as ``AdminActions.create_api_key`` does);
    ``InvalidationUnavailable`` from it means the credential exists all the same.
    """
    async with store.transaction() as tx:
        existing = await _superadmin_bindings(tx)
        if existing and not force:
            raise AlreadyBootstrapped(_refusal(len(existing)))
        created: list[_Created] = []

        org = await _find_organization(tx, organization_name)
        if org is None:
            org = await tx.organizations.create(name=organization_name)
            after: dict[str, Any] = {"id": org.id, "name": org.name}
            created.append(_Created("organization.create", "organization", org.id, org.id, after))
        project = await _find_project(tx, org.id, ADMIN_PROJECT)
        if project is None:
            project = await tx.projects.create(organization_id=org.id, name=ADMIN_PROJECT)
            after = {"id": project.id, "name": project.name, "allowed_models": []}
            created.append(_Created("project.create", "project", project.id, org.id, after))
        account = await _find_service_account(tx, org.id, SERVICE_ACCOUNT)
        if account is None:
            account = await tx.service_accounts.create(organization_id=org.id, name=SERVICE_ACCOUNT)
            after = {"id": account.id, "name": account.name}
            created.append(
                _Created("service_account.create", "service_account", account.id, org.id, after)
            )
        elif account.is_disabled:
            raise ValueError(
                f"service account {SERVICE_ACCOUNT!r} in {organization_name!r} is disabled; "
                "enable it, or bootstrap into another organisation"
            )
        binding = next((b for b in existing if b.subject_id == account.id), None)
        if binding is None:
            binding = await tx.role_bindings.create(
                subject_kind=PrincipalKind.SERVICE_ACCOUNT,
                subject_id=account.id,
                role=Role.SUPERADMIN,
                organization_id=None,  # superadmin is deployment-wide (schema CHECK)
            )
            after = {
                "subject": f"{PrincipalKind.SERVICE_ACCOUNT.value}:{account.id}",
                "role": Role.SUPERADMIN.value,
                "project_id": None,
            }
            created.append(_Created("role_binding.create", "role_binding", binding.id, None, after))
        key_id, full_key, secret = generate_key()
        key = await tx.api_keys.create(
            key_id=key_id,
            organization_id=org.id,
            project_id=project.id,
            name=KEY_NAME,
            secret_hash=hash_secret(pepper, key_id, secret),
            scopes=(Scope.ADMIN, Scope.INFERENCE),
            service_account_id=account.id,
        )
        created.append(_Created("api_key.create", "api_key", key.id, org.id, key_summary(key)))

        # Audit entries last: once one is appended the transaction may not write anything else.
        for entry in created:
            await tx.audit.append(
                actor=actor.id,
                action=entry.action,
                target_type=entry.target_type,
                target_id=entry.target_id,
                organization_id=entry.organization_id,
                after=entry.after,
                source_ip=actor.source_ip,
                request_id=actor.request_id,
            )
        if not force:
            others = [b for b in await _superadmin_bindings(tx) if b.id != binding.id]
            if others:
                raise AlreadyBootstrapped(_refusal(len(others)))
    await bus.publish(TOPIC_API_KEY, key.id)
    return BootstrapResult(org, project, account, binding, key, full_key)


@dataclass(frozen=True, slots=True)
class _Created:
    """An object this bootstrap made, to be audited once every write is done."""

    action: str
    target_type: str
    target_id: str
    organization_id: str | None
    after: dict[str, Any]


def _refusal(count: int) -> str:
    return (
        f"the deployment is already bootstrapped ({count} superadmin binding(s) exist); "
        "use --force to add another superadmin credential"
    )


async def _superadmin_bindings(tx: Transaction) -> list[RoleBinding]:
    """Every SUPERADMIN binding; ``organization_id=None`` reads the whole deployment."""
    bindings = await _every(
        lambda after: tx.role_bindings.list(organization_id=None, limit=MAX_PAGE_SIZE, after=after)
    )
    return [b for b in bindings if b.role is Role.SUPERADMIN]


async def _find_organization(tx: Transaction, name: str) -> Organization | None:
    orgs = await _every(lambda after: tx.organizations.list(limit=MAX_PAGE_SIZE, after=after))
    return next((o for o in orgs if o.name == name), None)


async def _find_project(tx: Transaction, organization_id: str, name: str) -> Project | None:
    projects = await _every(
        lambda after: tx.projects.list(
            organization_id=organization_id, limit=MAX_PAGE_SIZE, after=after
        )
    )
    return next((p for p in projects if p.name == name), None)


async def _find_service_account(
    tx: Transaction, organization_id: str, name: str
) -> ServiceAccount | None:
    accounts = await _every(
        lambda after: tx.service_accounts.list(
            organization_id=organization_id, limit=MAX_PAGE_SIZE, after=after
        )
    )
    return next((a for a in accounts if a.name == name), None)


async def _every(page: Callable[[str | None], Awaitable[Sequence[_R]]]) -> list[_R]:
    """All records of a keyset-paged listing. The store has no lookup by name, and a
    bootstrap runs once, so reading every page is fine here."""
    records: list[_R] = []
    after: str | None = None
    while True:
        batch = await page(after)
        records.extend(batch)
        if len(batch) < MAX_PAGE_SIZE:
            return records
        after = batch[-1].id
