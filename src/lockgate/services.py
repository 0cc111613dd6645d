"""Everything stateful a worker needs, built once at start-up and passed in.

No module-level state anywhere: ``Services.start`` opens the store, the
invalidation bus and the key cache for one worker process (after any fork),
and ``close`` releases them in reverse order.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lockgate.admission.admitter import LimitAdmitter
from lockgate.admission.build import build_admitter
from lockgate.config import RuntimeConfig
from lockgate.controlplane.actions import (
    TOPIC_API_KEY,
    TOPIC_ORGANIZATION,
    TOPIC_PROJECT,
    AdminActions,
)
from lockgate.controlplane.actions.prices import PriceActions
from lockgate.dataplane.lifecycle import ModelLifecycle
from lockgate.dataplane.pipeline.admit import Admitter
from lockgate.dataplane.pipeline.authenticate import (
    CredentialAuthenticator,
)
from lockgate.dataplane.pipeline.authorize import Authorizer, PolicyAuthorizer
from lockgate.dataplane.pipeline.route import BalancingRouter
from lockgate.dataplane.pipeline.settle import Settler
from lockgate.invalidation.build import build_bus
from lockgate.invalidation.bus import InvalidationBus
from lockgate.metering.acknowledge import Acknowledgement
from lockgate.metering.ledger import UsageLedger
from lockgate.metering.wiring import Metering
from lockgate.observability.ledger_metrics import LedgerCollector
from lockgate.observability.readiness import Readiness, build_readiness
from lockgate.observability.request_debug import DebugTap, RequestDebugger
from lockgate.observability.routing_metrics import PlanSource, RoutingCollector, routed_entries
from lockgate.observability.telemetry import Telemetry
from lockgate.routing.health_sharing import HealthSharing
from lockgate.startup import database_url, load_keyring, resolve_pepper
from lockgate.store.key_lookup import StoreKeyLookup
from lockgate.store.repositories.request_debug import request_debug
from lockgate.store.store import Store
from lockgate.tenancy.key_cache import KeyCache

if TYPE_CHECKING:
    from fastapi import FastAPI

    from lockgate.dataplane.idempotency import IdempotencyStore
    from lockgate.tenancy.jwt import JwtVerifier
    from lockgate.webhooks.background import BillingWork

log = logging.getLogger("lockgate.services")

_PEPPER_FILE = "api-key-pepper"


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
    # Debug sessions of API keys (None: observability.request_debugging is off).
    request_debug: RequestDebugger | None = None
    # Set by ``run_gateway`` once the data plane exists (the checks need its router).
    readiness: Readiness | None = None
    # The ledger with live prices and the CloudEvents push (None: metering is off).
    metering: Metering | None = None
    # Budgets' evaluation and gate, webhook delivery (``start_billing``; None: not started).
    billing: BillingWork | None = None
    # Runtime deployments, live rollouts, rollback, shadow copies (attached in ``watch``).
    lifecycle: ModelLifecycle | None = None
    # Idempotency-Key state shared by every replica (``start_idempotency``; None: in process).
    idempotency: IdempotencyStore | None = None
    # Breaker openings, ejections and throttles shared with every other process (``watch``).
    health_sharing: HealthSharing | None = None
    # Bounds how long a response's end waits for its usage record (metering.acknowledge).
    acknowledgement_watch: Acknowledgement | None = None

    @classmethod
    async def start(
        cls, config: RuntimeConfig, *, worker_index: int = 0, flush_in_process: bool = True
    ) -> Services:
        """``worker_index`` names this worker's usage journal, stable across restarts.
        ``flush_in_process``: flush it to the store from here, rather than leave it to
        a ``FlusherProcess`` (what ``lockgate serve`` runs)."""
        keyring = load_keyring()
        store = await Store.open(database_url(config))
        try:
            bus = build_bus(config.redis_url, config.database_url, config.server.data_dir)
            cache = KeyCache(StoreKeyLookup(store), ttl_s=config.auth.key_cache_ttl_s)
            bus.subscribe(TOPIC_API_KEY, cache.invalidate)
            bus.subscribe(TOPIC_PROJECT, cache.invalidate_project)
            bus.subscribe(TOPIC_ORGANIZATION, cache.invalidate_organization)
            bus.on_reconnect(cache.clear)
            # Runtime deployments and rollouts: subscribed before the bus starts.
            lifecycle = ModelLifecycle.for_services(config, store, bus)
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
        telemetry = Telemetry.build(config, admitter, has_ledger_process=not flush_in_process)
        ledger = None
        metering = None
        if config.metering.enabled:
            try:  # the ledger, live prices and the CloudEvents push (metering/wiring.py)
                metering = await Metering.start(
                    config, store, bus, worker_index=worker_index, flush_in_process=flush_in_process
                )
            except BaseException:
                await bus.close()
                await store.close()
                raise
            ledger = metering.ledger
        telemetry.metrics.add_collector(LedgerCollector(ledger))
        authorizer: Authorizer = PolicyAuthorizer()
        debugger = None
        if config.observability.request_debugging:
            retention_days = config.observability.request_debug_retention_days
            debugger = RequestDebugger(
                request_debug(store), bus, retention_s=retention_days * 86400.0
            )
            authorizer = DebugTap(authorizer, debugger)
            telemetry.metrics.add_collector(debugger)
            await debugger.start()  # never raises for the store: it retries in the background
        return cls(
            store,
            bus,
            cache,
            pepper,
            authenticator,
            authorizer,
            actions,
            jwt,
            admitter,
            telemetry,
            ledger,
            debugger,
            metering=metering,
            lifecycle=lifecycle,
        )

    def admin_app(self) -> FastAPI:
        # Imported here: the admin framework costs every CLI command ~0.3 s otherwise.
        from lockgate.controlplane.actions.request_debug import RequestDebugActions
        from lockgate.controlplane.admin import create_admin_app

        return create_admin_app(
            self.store,
            self.actions,
            self.authenticator,
            self.jwt,
            self.telemetry.render_metrics,
            request_debug=RequestDebugActions(self.store, self.bus),
            readiness=self.readiness_answer,
            prices=self.price_actions(),
            deployments=self.lifecycle.actions if self.lifecycle is not None else None,
            shadow=self.lifecycle.shadow if self.lifecycle is not None else None,
        )

    def price_actions(self) -> PriceActions | None:
        """Adding prices at runtime (None when metering is off: nothing would use them)."""
        if self.metering is None:
            return None
        return PriceActions(self.store, self.bus, self.metering.catalogue.config_entries)

    async def watch(
        self, config: RuntimeConfig, router: PlanSource, clock: Callable[[], float]
    ) -> Readiness:
        """Upstream-health metrics and readiness over the data plane's router (``clock``:
        its loop's ``time``). Checks once before returning, then in the background;
        ``close`` stops it."""
        models = routed_entries(config.models)  # a versioned model: each name@version
        if self.lifecycle is not None and isinstance(router, BalancingRouter):
            self.lifecycle.attach(router)  # runtime deployments and rollouts reach its pools
        if isinstance(router, BalancingRouter):  # one process's health evidence is everyone's
            self.health_sharing = HealthSharing(self.bus, router.pool_of, clock)
            for name in models:
                pool = router.pool_of(name)
                if pool is not None:
                    self.health_sharing.attach(pool)
        self.telemetry.metrics.add_collector(RoutingCollector(router, models, clock))
        self.readiness = build_readiness(config, request_debug(self.store).ping, router, clock)
        await self.readiness.refresh()
        self.readiness.start()
        return self.readiness

    def start_billing(self, config: RuntimeConfig) -> BillingWork | None:
        """Start this worker's budget gate and its bid for the billing lease (evaluator,
        usage summaries, webhook deliverer); ``close`` stops them. None when
        ``metering.budgets.enabled`` is off."""
        if not config.metering.budgets.enabled:
            return None
        from lockgate.metering.budgets_gate import TOPIC_BUDGETS, BudgetGate
        from lockgate.webhooks.background import BillingWork

        gate = None
        if isinstance(self.admitter, LimitAdmitter):
            gate = BudgetGate(self.store, self.admitter)
            self.bus.subscribe(TOPIC_BUDGETS, gate.poke)

        async def exhaustion_changed() -> None:
            await self.bus.publish(TOPIC_BUDGETS, "exhausted")

        self.billing = BillingWork(
            self.store,
            load_keyring(),
            config.metering.budgets,
            config.metering.webhooks,
            gate=gate,
            on_exhaustion_change=exhaustion_changed,
        )
        self.billing.start()
        return self.billing

    def start_idempotency(self, config: RuntimeConfig) -> IdempotencyStore | None:
        """Scale-out (``redis.url`` set): Idempotency-Key claims and answers in Redis, so a
        retry that reaches another replica is still a replay; pass it to the data plane.
        None in embedded mode (the data plane keeps them in process) or when disabled."""
        spec = config.routing.idempotency
        if config.redis_url is None or not spec.enabled:
            return None
        from lockgate.dataplane.idempotency import IdempotencyStore
        from lockgate.dataplane.idempotency_redis import RedisBackend

        backend = RedisBackend(config.redis_url, config.redis_key_prefix, spec)
        self.idempotency = IdempotencyStore(backend, spec)
        return self.idempotency

    def acknowledgement(self, config: RuntimeConfig) -> Callable[[], Awaitable[None]] | None:
        """What the data plane awaits before ending a response: the ledger's journal sync,
        bounded by ``metering.acknowledge_timeout_s``, when ``metering.acknowledge`` is
        ``durable``; None without a ledger or when async."""
        if self.ledger is None or config.metering.acknowledge != "durable":
            return None
        if self.acknowledgement_watch is None:
            self.acknowledgement_watch = Acknowledgement(
                self.ledger.journal, max_wait_s=config.metering.acknowledge_timeout_s
            )
            self.acknowledgement_watch.start()
        # The journal's own ``sync``, not a wrapper: one coroutine fewer per response.
        return self.ledger.journal.sync

    def readiness_answer(self) -> tuple[int, bytes]:
        """``/readyz`` of the admin port: this worker's cached verdict."""
        if self.readiness is None:
            return 503, b'{"status":"starting","checks":{}}'
        return self.readiness.answer()

    @property
    def settlers(self) -> tuple[Settler, ...]:
        """Billing first: a failing metrics or log settler never costs a usage record."""
        ledger: tuple[Settler, ...] = (self.ledger,) if self.ledger is not None else ()
        debug: tuple[Settler, ...] = (self.request_debug,) if self.request_debug else ()
        lifecycle = self.lifecycle
        # Only versioned models can roll back: without them, no per-request cost at all.
        rollback: tuple[Settler, ...] = (
            (lifecycle,) if lifecycle is not None and lifecycle.is_needed_per_request else ()
        )
        return (*ledger, *self.telemetry.settlers, *debug, *rollback)

    async def close(self) -> None:
        """After the data plane drained: the ledger commits and flushes what it holds."""
        if self.lifecycle is not None:  # shadow copies, rollbacks being recorded
            await self.lifecycle.close()
        if self.billing is not None:
            await self.billing.close()
        if self.readiness is not None:
            await self.readiness.stop()
        if self.health_sharing is not None:
            await self.health_sharing.close()
        if self.acknowledgement_watch is not None:
            await self.acknowledgement_watch.close()
        if self.metering is not None:  # pusher, ledger (its final flush), prices
            await self.metering.close()
        elif self.ledger is not None:
            await self.ledger.close()
        if self.request_debug is not None:
            await self.request_debug.close()
        if isinstance(self.admitter, LimitAdmitter):
            await self.admitter.close()
        if self.idempotency is not None:  # pending completions first, then the connection
            await self.idempotency.close()
        await self.bus.close()
        await self.store.close()
