"""Everything stateful a worker needs, built once at start-up and passed in.

No module-level state anywhere: ``Services.start`` opens the store, the
invalidation bus and the key cache for one worker process (after any fork),
and ``close`` releases them in reverse order.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

from lockgate.admission.admitter import LimitAdmitter
from lockgate.admission.limiter import Limiter
from lockgate.admission.local import LocalLimiter
from lockgate.config import RuntimeConfig
from lockgate.config.spec import SecretRef
from lockgate.controlplane.actions import (
    TOPIC_API_KEY,
    TOPIC_ORGANIZATION,
    TOPIC_PROJECT,
    AdminActions,
)
from lockgate.dataplane.pipeline.admit import AdmitAll, Admitter
from lockgate.dataplane.pipeline.authenticate import (
    CredentialAuthenticator,
)
from lockgate.dataplane.pipeline.authorize import Authorizer, PolicyAuthorizer
from lockgate.dataplane.pipeline.settle import Settler
from lockgate.invalidation.build import build_bus
from lockgate.invalidation.bus import InvalidationBus
from lockgate.metering.ledger import UsageLedger
from lockgate.metering.pricing import PriceCatalogue
from lockgate.observability.access_log import AccessLog
from lockgate.observability.admission_metrics import AdmissionCollector, LimiterHealth
from lockgate.observability.metrics import GatewayMetrics
from lockgate.observability.node import NodeMetrics
from lockgate.store.database import default_url
from lockgate.store.errors import StoreError
from lockgate.store.key_lookup import StoreKeyLookup
from lockgate.store.store import Store
from lockgate.tenancy.key_cache import KeyCache
from lockgate.tenancy.keys import DEFAULT_PEPPER_ENV, load_pepper

if TYPE_CHECKING:
    from fastapi import FastAPI

    from lockgate.tenancy.jwt import JwtVerifier
    from lockgate.tenancy.secretbox import Keyring

log = logging.getLogger("lockgate.services")

_PEPPER_FILE = "api-key-pepper"


def database_url(config: RuntimeConfig) -> str:
    return config.database_url or default_url(config.server.data_dir)


def is_embedded(config: RuntimeConfig) -> bool:
    return config.database_url is None


def ensure_data_dir(config: RuntimeConfig) -> None:
    """The embedded database, pepper and local bus live here; create it at start-up."""
    Path(config.server.data_dir).mkdir(parents=True, exist_ok=True)


async def prepare_database(config: RuntimeConfig) -> None:
    """Run migrations once, before workers start (safe if several replicas race)."""
    from lockgate.store import migrate  # Alembic: only where migrations run

    await migrate.upgrade(database_url(config))


def prepare_database_in_child(config: RuntimeConfig) -> None:
    """``prepare_database`` in a short-lived process, so this one never loads Alembic."""
    done = subprocess.run(
        [sys.executable, "-m", "lockgate.store.migrate"],
        input=database_url(config),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise StoreError(
            done.stderr.strip().splitlines()[-1] if done.stderr else "migration failed"
        )


def resolve_pepper(config: RuntimeConfig) -> bytes:
    """The API key pepper: configured, from the environment, or (embedded) a local file.

    Scale-out replicas must share one pepper, so there it has to be configured.
    """
    if config.auth.api_key_pepper is not None or os.environ.get(DEFAULT_PEPPER_ENV):
        return load_pepper(config.auth.api_key_pepper)
    if not is_embedded(config):
        raise ValueError(
            f"set {DEFAULT_PEPPER_ENV} (or auth.api_key_pepper): every replica sharing "
            "the database must hash API keys with the same pepper"
        )
    path = Path(config.server.data_dir) / _PEPPER_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write("hex:" + secrets.token_hex(32) + "\n")
        log.info("generated an API key pepper in %s (keep it with the database)", path)
    return load_pepper(SecretRef(file=str(path)))


# secretbox.DEFAULT_ENV, named here so deployments without it never load AES-GCM.
_MASTER_KEYS_ENV = "LOCKGATE_MASTER_KEYS"


def load_keyring() -> Keyring | None:
    """The master keys encrypting secrets at rest (upstream credentials, idempotent
    replays), or None when ``LOCKGATE_MASTER_KEYS`` is unset. Raises ``KeyringError``
    (a ``ValueError``) for a malformed value, so a bad key stops start-up."""
    if not os.environ.get(_MASTER_KEYS_ENV, "").strip():
        return None
    from lockgate.tenancy.secretbox import Keyring

    return Keyring.from_env(_MASTER_KEYS_ENV)


@dataclass
class Services:
    store: Store
    bus: InvalidationBus
    key_cache: KeyCache
    pepper: bytes
    authenticator: CredentialAuthenticator
    authorizer: Authorizer
    actions: AdminActions
    jwt: JwtVerifier | None
    admitter: Admitter
    telemetry: Telemetry
    ledger: UsageLedger | None = None

    @classmethod
    async def start(cls, config: RuntimeConfig, *, worker_index: int = 0) -> Services:
        """``worker_index`` names this worker's usage journal, stable across restarts."""
        keyring = load_keyring()
        store = await Store.open(database_url(config))
        try:
            bus = build_bus(config.redis_url, config.database_url, config.server.data_dir)
            cache = KeyCache(StoreKeyLookup(store), ttl_s=config.auth.key_cache_ttl_s)
            bus.subscribe(TOPIC_API_KEY, cache.invalidate)
            bus.subscribe(TOPIC_PROJECT, cache.invalidate_project)
            bus.subscribe(TOPIC_ORGANIZATION, cache.invalidate_organization)
            bus.on_reconnect(cache.clear)
            await bus.start()
        except BaseException:
            await store.close()
            raise
        pepper = resolve_pepper(config)
        jwt: JwtVerifier | None = None
        if config.auth.jwt_issuers:  # PyJWT and its crypto: only for deployments that use them
            from lockgate.tenancy.jwt import JwtVerifier

            jwt = JwtVerifier(config.auth.jwt_issuers)
        authenticator = CredentialAuthenticator(
            cache, pepper, jwt, allow_anonymous=config.auth.allow_anonymous
        )
        actions = AdminActions(store, bus, pepper, keyring)
        admitter = build_admitter(config)
        telemetry = Telemetry.build(config, admitter)
        ledger = None
        if config.metering.enabled:
            ledger = UsageLedger(
                Path(config.server.data_dir) / "usage" / f"journal-{worker_index}.db",
                store.usage,
                PriceCatalogue(config.metering.prices),
            )
            try:
                await ledger.start()  # re-sends whatever a previous run left in the journal
            except BaseException:
                await bus.close()
                await store.close()
                raise
        return cls(
            store,
            bus,
            cache,
            pepper,
            authenticator,
            PolicyAuthorizer(),
            actions,
            jwt,
            admitter,
            telemetry,
            ledger,
        )

    def admin_app(self) -> FastAPI:
        # Imported here: the admin framework costs every CLI command ~0.3 s otherwise.
        from lockgate.controlplane.admin import create_admin_app

        return create_admin_app(
            self.store, self.actions, self.authenticator, self.jwt, self.telemetry.render_metrics
        )

    @property
    def settlers(self) -> tuple[Settler, ...]:
        """Billing first: a failing metrics or log settler never costs a usage record."""
        ledger: tuple[Settler, ...] = (self.ledger,) if self.ledger is not None else ()
        return (*ledger, *self.telemetry.settlers)

    async def close(self) -> None:
        """After the data plane drained: the ledger commits and flushes what it holds."""
        if self.ledger is not None:
            await self.ledger.close()
        if isinstance(self.admitter, LimitAdmitter):
            await self.admitter.close()
        await self.bus.close()
        await self.store.close()


def metrics_directory(config: RuntimeConfig) -> Path | None:
    """Where workers share metric snapshots (one process needs none)."""
    if config.server.workers <= 1:
        return None
    return Path(config.server.data_dir) / "metrics"


@dataclass
class Telemetry:
    """Metrics and the access log of one worker: settlers for the pipeline, a page to scrape."""

    metrics: GatewayMetrics
    node: NodeMetrics
    access_log: AccessLog | None

    @classmethod
    def build(cls, config: RuntimeConfig, admitter: Admitter) -> Telemetry:
        settings = config.observability
        metrics = GatewayMetrics(
            models=[m.name for m in config.models],
            deployments=[d.name for m in config.models for d in m.deployments],
            by_project=settings.metrics_by_project,
            max_projects=settings.max_projects,
        )
        access_log = AccessLog(settings.access_log) if settings.access_log else None
        if isinstance(admitter, LimitAdmitter):
            limiter = admitter.limiter
            # Only the shared (Redis) limiter has a backend that can fail.
            health = (
                cast("LimiterHealth", limiter) if hasattr(limiter, "backend_failures") else None
            )
            metrics.add_collector(AdmissionCollector(admitter, health, admitter.gates))
        else:
            metrics.add_collector(AdmissionCollector())
        if access_log is not None:
            metrics.add_collector(access_log)
        return cls(metrics, NodeMetrics(metrics, metrics_directory(config)), access_log)

    @property
    def settlers(self) -> tuple[Settler, ...]:
        return (self.metrics,) if self.access_log is None else (self.metrics, self.access_log)

    def start(self) -> None:
        if self.access_log is not None:
            self.access_log.start()

    def close(self) -> None:
        """After draining: the access log writes what is left."""
        if self.access_log is not None:
            self.access_log.close()

    async def render_metrics(self) -> tuple[str, bytes]:
        # Reading the other workers' snapshots takes milliseconds: off the event loop.
        return await asyncio.to_thread(self.node.render)


def build_admitter(config: RuntimeConfig) -> Admitter:
    """Limits in Redis when replicas share it (exact across them), else in process."""
    if not config.admission.enabled:
        return AdmitAll()
    limiter: Limiter
    if config.redis_url is not None:
        from lockgate.admission.redis_limiter import RedisLimiter

        limiter = RedisLimiter(
            config.redis_url,
            namespace=f"{config.redis_key_prefix}limits:",
            timeout_s=config.admission.backend_timeout_ms / 1000,
        )
    else:
        limiter = LocalLimiter()
    return LimitAdmitter(limiter, config.admission)
