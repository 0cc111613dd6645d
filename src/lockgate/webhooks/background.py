"""The billing background work of one worker process, in tasks it owns and stops cleanly.

Two loops:

- the **budget gate** (every worker with admission on): keeps the admitter's
  set of spent reject budgets current (``metering/budgets_gate.py``);
- the **lease loop** (every worker): the process holding the store lease
  ``lockgate.billing`` runs the deployment's single-instance work — the budget
  evaluator and the usage summaries every ``evaluate_interval_s``, and the
  webhook deliverer every ``poll_interval_s``. The others retry the lease
  every third of its TTL, and one of them takes over within a TTL when the
  holder dies. A holder renews every loop and gives the lease back on a clean
  shutdown.

Why a store lease rather than a Redis lock: every deployment has a store
(embedded ones have no Redis), and the work it guards is store work. Nothing
relies on it for correctness: threshold events and summaries are
deduplicated by the store, and deliveries are claimed row by row; the lease
only keeps N processes from doing the same work N times.

Failures (store down, a receiver misbehaving) are logged and retried on the
next turn; nothing here can stop the gateway, and ``close`` bounds shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING

from lockgate.metering.budgets_evaluator import BudgetEvaluator
from lockgate.metering.budgets_gate import BudgetGate
from lockgate.store.columns import utc_now
from lockgate.store.errors import StoreError
from lockgate.store.store import Store
from lockgate.webhooks.deliverer import Deliverer
from lockgate.webhooks.spec import BudgetsSpec, WebhooksSpec
from lockgate.webhooks.summaries import UsageSummaries

if TYPE_CHECKING:
    from lockgate.tenancy.secretbox import Keyring

log = logging.getLogger("lockgate.billing")

LEASE_NAME = "lockgate.billing"


def holder_name() -> str:
    """This process, recognisably in the lease row: host, pid, and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class BillingWork:
    def __init__(
        self,
        store: Store,
        keyring: Keyring | None,
        budgets: BudgetsSpec,
        webhooks: WebhooksSpec,
        *,
        gate: BudgetGate | None = None,
        on_exhaustion_change: Callable[[], Awaitable[None]] | None = None,
        holder: str | None = None,
    ) -> None:
        self._store = store
        self._budgets = budgets
        self._webhooks = webhooks
        self._gate = gate
        self.holder = holder or holder_name()
        self.evaluator = BudgetEvaluator(store, on_exhaustion_change=on_exhaustion_change)
        self.summaries = UsageSummaries(store, delay_s=webhooks.summary_delay_s)
        self.deliverer = Deliverer(store, keyring, webhooks)
        self.is_leader = False
        self._tasks: list[asyncio.Task[None]] = []
        self._failures_logged_at = -1e9

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self._gate is not None:
            self._tasks.append(loop.create_task(self._gate.run(self._budgets.refresh_interval_s)))
        self._tasks.append(loop.create_task(self._lease_loop()))

    async def close(self) -> None:
        """Stop both loops (an attempt in flight is cut; its claim runs out and it is
        retried), then give the lease back so another process takes over at once."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self.is_leader:
            self.is_leader = False
            with contextlib.suppress(StoreError, TimeoutError):
                async with asyncio.timeout(2.0):
                    await self._store.leases.release(LEASE_NAME, holder=self.holder)

    async def run_leader_pass(self) -> None:
        """One turn of the single-instance work (tests call it directly)."""
        await self.evaluator.run_once()
        await self.summaries.run_once()

    async def _lease_loop(self) -> None:
        ttl = self._budgets.lease_ttl_s
        next_evaluation = 0.0
        renewed_at = -1e9
        while True:
            clock = time.monotonic()
            if not self.is_leader or clock - renewed_at >= ttl / 3:
                self.is_leader = await self._acquire(ttl)
                renewed_at = clock
            if not self.is_leader:
                await asyncio.sleep(ttl / 3)
                continue
            try:
                if clock >= next_evaluation:
                    next_evaluation = clock + self._budgets.evaluate_interval_s
                    await self.run_leader_pass()
                await self.deliverer.run_once()
            except StoreError as error:
                self._log_failure(error)
            await asyncio.sleep(self._webhooks.poll_interval_s)

    async def _acquire(self, ttl_s: float) -> bool:
        now = utc_now()
        try:
            return await self._store.leases.acquire(
                LEASE_NAME, holder=self.holder, now=now, until=now + timedelta(seconds=ttl_s)
            )
        except StoreError as error:
            self._log_failure(error)
            return False

    def _log_failure(self, error: StoreError) -> None:
        now = time.monotonic()
        if now - self._failures_logged_at >= 60:
            log.warning("billing: store unavailable for budgets and webhooks (%s); retrying", error)
            self._failures_logged_at = now
