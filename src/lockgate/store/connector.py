"""Where a repository's statements run: in a short transaction of their own, or in the
caller's ``store.transaction()``.

Repositories never open connections themselves; they ask their connector for
one with ``async with connector.connect(write=…) as conn``. The same repository code
then serves both ``await store.projects.get(…)`` (its own transaction, or on
PostgreSQL a single autocommit statement for reads) and ``tx.projects.update(…)``
(the caller's transaction, committed with its audit entry).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from lockgate.store.database import WRITE_OPTION, Backend
from lockgate.store.errors import StoreError, translated


class Connector(ABC):
    """Hands repositories a connection; translates driver errors into ``StoreError``s."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    @abstractmethod
    def connect(
        self, *, write: bool, is_audit: bool = False
    ) -> AbstractAsyncContextManager[AsyncConnection]:
        """A connection inside a transaction (or autocommit, for a one-statement read).

        ``write`` says the block will modify data (SQLite: ``BEGIN IMMEDIATE``).
        ``is_audit`` marks the audit appender, which may write after an append.
        """


class EngineConnector(Connector):
    """Each ``connect`` is its own transaction, committed when the block exits cleanly."""

    def __init__(self, engine: AsyncEngine, backend: Backend) -> None:
        super().__init__(backend)
        self._engine = engine
        # PostgreSQL reads skip BEGIN/COMMIT: two round trips fewer on the data
        # plane's key lookup. (SQLite keeps BEGIN: its AUTOCOMMIT mode would hand
        # transaction control back to the sqlite3 module, see database.py.)
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")

    @asynccontextmanager
    async def _open(self, *, write: bool) -> AsyncIterator[AsyncConnection]:
        with translated():
            if not write and self.backend is Backend.POSTGRESQL:
                async with self._autocommit.connect() as connection:
                    yield connection
                return
            async with self._engine.connect() as connection:
                if write:
                    await connection.execution_options(**{WRITE_OPTION: True})
                async with connection.begin():
                    yield connection

    def connect(
        self, *, write: bool, is_audit: bool = False
    ) -> AbstractAsyncContextManager[AsyncConnection]:
        return self._open(write=write)


class TransactionConnector(Connector):
    """Every ``connect`` yields the one connection of a caller's ``store.transaction()``.

    Enforces one ordering rule: once an audit entry is appended (which on
    PostgreSQL holds the audit lock until commit), the transaction may append more
    entries and read, but not write anything else. Writes after the lock would
    hold it longer, and could deadlock against a transaction that holds a row
    lock and waits for the audit lock.
    """

    def __init__(self, connection: AsyncConnection, backend: Backend) -> None:
        super().__init__(backend)
        self._connection = connection
        self.is_finished = False
        self.has_audit_entry = False

    @asynccontextmanager
    async def _use(self, *, write: bool, is_audit: bool) -> AsyncIterator[AsyncConnection]:
        if self.is_finished:
            raise StoreError("the transaction has already finished")
        if write and self.has_audit_entry and not is_audit:
            raise StoreError(
                "append the audit entry after the transaction's other writes and locking reads"
            )
        with translated():
            yield self._connection
        if is_audit:
            self.has_audit_entry = True

    def connect(
        self, *, write: bool, is_audit: bool = False
    ) -> AbstractAsyncContextManager[AsyncConnection]:
        return self._use(write=write, is_audit=is_audit)
