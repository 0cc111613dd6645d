"""One operator command's resources: config, store, bus and actions, opened and closed around it.

Read commands open only the store (and never migrate: reading must not change
the schema). Write commands first do what ``lockgate serve`` does before its
workers start (data directory, migrations, pepper), then start the
deployment's invalidation bus *before* changing anything: if Redis or
PostgreSQL cannot be reached, nothing is changed and the command fails.

On the embedded SQLite database the bus is the shared
``<data_dir>/invalidation.sqlite3`` log that every gateway worker polls, so a
revocation from the CLI reaches running gateways within a second.
"""

from __future__ import annotations

import getpass
import os
import sys
from dataclasses import dataclass, field

from lockgate.config import GatewaySpec, RuntimeConfig, load_config, parse_config, resolve
from lockgate.controlplane.actions import Actor, AdminActions
from lockgate.controlplane.commands.output import Output
from lockgate.invalidation.build import build_bus
from lockgate.invalidation.bus import (
    InvalidationBus,
    InvalidationUnavailable,
    KeyHandler,
    ReconnectHandler,
)
from lockgate.startup import database_url, resolve_pepper
from lockgate.store.store import Store


class ReportingBus:
    """The real bus, except that a failed ``publish`` is recorded instead of raised.

    ``AdminActions`` publishes after its transaction committed; raised, the error
    would lose the command's result (a new key, shown once). The command prints
    its result, then reports the failure and exits 3.
    """

    def __init__(self, bus: InvalidationBus) -> None:
        self._bus = bus
        self.failures: list[str] = []

    async def start(self) -> None:
        await self._bus.start()

    async def close(self) -> None:
        await self._bus.close()

    async def publish(self, topic: str, key: str) -> None:
        try:
            await self._bus.publish(topic, key)
        except InvalidationUnavailable as error:
            self.failures.append(str(error))

    def subscribe(self, topic: str, handler: KeyHandler) -> None:
        self._bus.subscribe(topic, handler)

    def on_reconnect(self, handler: ReconnectHandler) -> None:
        self._bus.on_reconnect(handler)


@dataclass
class Writer:
    """What write commands have on top of the store."""

    bus: ReportingBus
    pepper: bytes
    actions: AdminActions


@dataclass
class Session:
    config: RuntimeConfig
    store: Store
    out: Output
    actor: Actor
    writer: Writer | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def actions(self) -> AdminActions:
        return self.write_access().actions

    def write_access(self) -> Writer:
        if self.writer is None:
            raise RuntimeError("a read-only command asked for write access")  # a routing bug
        return self.writer


def load(path: str | None) -> RuntimeConfig:
    """The config as ``lockgate serve`` would run it, LOCKGATE_* overrides included.

    Raises ``ConfigError``. Without a file the defaults apply (embedded database
    in ``./lockgate-data``, or ``LOCKGATE_DATA_DIR``/``LOCKGATE_DATABASE_URL``).
    """
    spec: GatewaySpec = (
        load_config(path) if path else parse_config("", source="<defaults>", env=os.environ)
    )
    return resolve(spec, source=path or "<defaults>")


def operator_actor() -> Actor:
    """``cli:<os user>``: on the host, the OS account is the operator's identity."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers with arbitrary uids)
        name = f"uid{os.getuid()}"
    return Actor(f"cli:{name}")


async def open_session(config: RuntimeConfig, *, writes: bool, is_json: bool) -> Session:
    """Open what the command needs; the caller must ``await close_session``.

    For ``writes`` the database must already be prepared (``serve.prepare``).
    Raises ``StoreError`` or ``InvalidationUnavailable`` (nothing changed yet).
    """
    store = await Store.open(database_url(config))
    session = Session(config, store, Output(is_json=is_json), operator_actor())
    if not writes:
        return session
    try:
        pepper = resolve_pepper(config)
        bus = ReportingBus(build_bus(config.redis_url, config.database_url, config.server.data_dir))
        await bus.start()
    except BaseException:
        await store.close()
        raise
    session.writer = Writer(bus, pepper, AdminActions(store, bus, pepper))
    return session


async def close_session(session: Session) -> None:
    try:
        if session.writer is not None:
            await session.writer.bus.close()
    finally:
        await session.store.close()


def report_warnings(session: Session, label: str) -> None:
    for warning in session.warnings:
        print(f"{label}: warning: {warning}", file=sys.stderr)
