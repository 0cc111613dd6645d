"""``Store``: the handle the rest of Lockgate holds, built once at start-up.

    store = await Store.open(url)
    key = await store.api_keys.lookup(key_id)             # one statement, own transaction
    async with store.transaction() as tx:                  # an admin action + its audit entry
        before = await tx.projects.get(pid, organization_id=org, for_update=True)
        after = await tx.projects.update(pid, organization_id=org, name="new")
        await tx.audit.append(actor=…, action="project.update", …)
    await store.close()

The same repositories hang off both; only where their statements run differs
(see ``connector.py``). A ``StoreError`` raised inside a transaction means the
transaction is lost (PostgreSQL aborts it): let it propagate out of the block,
which rolls back, and retry the whole block if appropriate.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from lockgate.store.connector import Connector, EngineConnector, TransactionConnector
from lockgate.store.database import (
    WRITE_OPTION,
    Backend,
    PoolSettings,
    backend_of,
    create_engine,
    prepare,
    resolve_url,
    safe_url,
)
from lockgate.store.errors import StoreError, translated
from lockgate.store.repositories import (
    ApiKeys,
    AuditLog,
    IdempotencyRecords,
    Organizations,
    Projects,
    RoleBindings,
    ServiceAccounts,
    UpstreamSecrets,
    UsageRecords,
    Users,
)
from lockgate.store.repositories.budgets import Budgets
from lockgate.store.repositories.deployments import Rollouts, RuntimeDeployments
from lockgate.store.repositories.leases import Leases
from lockgate.store.repositories.request_debug import RequestDebug
from lockgate.store.repositories.webhooks import Webhooks
from lockgate.store.revision import HEAD_REVISION, revision_of


class Repositories:
    """Every repository, bound to one connector."""

    def __init__(self, connector: Connector) -> None:
        self.organizations = Organizations(connector)
        self.projects = Projects(connector)
        self.users = Users(connector)
        self.service_accounts = ServiceAccounts(connector)
        self.role_bindings = RoleBindings(connector)
        self.api_keys = ApiKeys(connector)
        self.upstream_secrets = UpstreamSecrets(connector)
        self.audit = AuditLog(connector)
        self.idempotency = IdempotencyRecords(connector)
        self.usage = UsageRecords(connector)
        # Budgets, webhooks and background leases (0006).
        self.budgets = Budgets(connector)
        self.webhooks = Webhooks(connector)
        self.leases = Leases(connector)
        # Runtime deployments and rollouts (0007), per-key request debugging (0008).
        self.deployments = RuntimeDeployments(connector)
        self.rollouts = Rollouts(connector)
        self.request_debug = RequestDebug(connector)


class Transaction(Repositories):
    """Repositories whose statements all run in one database transaction.

    Not safe for concurrent use: one connection, one statement at a time.
    """


class Store(Repositories):
    def __init__(self, engine: AsyncEngine, backend: Backend) -> None:
        super().__init__(EngineConnector(engine, backend))
        self.backend = backend
        self._engine = engine

    @classmethod
    async def open(
        cls, url: str | URL, *, pool: PoolSettings | None = None, check_schema: bool = True
    ) -> Store:
        """Connect to ``url`` (see ``database.resolve_url``) and check it is reachable.

        With ``check_schema`` the database must be migrated to this version's head
        revision (run ``migrate.upgrade`` first), so a replica never serves against a
        schema it does not know. Raises ``InvalidDatabaseUrl``, ``StoreUnavailable``
        or ``StoreError``.
        """
        resolved = resolve_url(url)
        engine = create_engine(resolved, pool)
        try:
            with translated():
                await prepare(engine)
                async with engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
                    if check_schema:
                        await _check_schema(conn, resolved)
        except BaseException:
            await engine.dispose()
            raise
        return cls(engine, backend_of(resolved))

    async def close(self) -> None:
        """Close every pooled connection; the store is unusable afterwards."""
        await self._engine.dispose()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """One write transaction: commits when the block exits normally, rolls back
        when it raises. SQLite: ``BEGIN IMMEDIATE`` (writers queue, up to the busy
        timeout); PostgreSQL: READ COMMITTED."""
        with translated():
            async with self._engine.connect() as conn:
                await conn.execution_options(**{WRITE_OPTION: True})
                async with conn.begin():
                    connector = TransactionConnector(conn, self.backend)
                    try:
                        yield Transaction(connector)
                    finally:
                        connector.is_finished = True


async def _check_schema(conn: AsyncConnection, url: URL) -> None:
    revision = await conn.run_sync(revision_of)
    expected = HEAD_REVISION
    if revision != expected:
        raise StoreError(
            f"database {safe_url(url)} is at schema revision {revision or '(none)'}, "
            f"this version of Lockgate needs {expected}: run the migrations "
            "(lockgate.store.migrate.upgrade) first"
        )
