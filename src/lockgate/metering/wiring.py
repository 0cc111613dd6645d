"""Metering's stateful parts in one worker: the ledger, the live price catalogue, the pusher.

``services.py`` builds one ``Metering`` per worker process (after any fork) and
closes it after the data plane drained:

    metering = await Metering.start(config, store, bus, worker_index=0)
    ledger = metering.ledger                 # the settler
    ...
    await metering.close()                   # pusher, then ledger (final flush), then prices

Order at start: prices first (the flusher prices the journal's backlog as soon
as the ledger starts), then the ledger, then the pusher.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lockgate.config import RuntimeConfig
from lockgate.invalidation.bus import InvalidationBus
from lockgate.metering.cloudevents_push import CloudEventsPusher, push_settings
from lockgate.metering.flusher import UsageSink
from lockgate.metering.ledger import UsageLedger
from lockgate.metering.live_prices import TOPIC_PRICES, LivePriceCatalogue
from lockgate.metering.record import UsageRecord
from lockgate.store.repositories.usage import UsageRecords
from lockgate.store.store import Store


class QueueingSink:
    """``store.usage`` for the flusher, queueing every new record for the pusher too."""

    def __init__(self, usage: UsageRecords) -> None:
        self._usage = usage

    async def insert_many(self, records: Sequence[UsageRecord]) -> int:
        return await self._usage.insert_many(records, queue_for_push=True)


def ledger_sink(config: RuntimeConfig, store: Store) -> UsageSink:
    """Where a flusher writes: ``store.usage``, queueing new records for the CloudEvents
    push when ``metering.cloudevents`` is configured. Every flusher of a deployment must
    use it (a worker's, or the ``FlusherProcess``), or records escape the push."""
    if config.metering.cloudevents is None:
        return store.usage
    return QueueingSink(store.usage)


def process_name() -> str:
    """Names this process as a lease holder: host, pid, and a random part (pids recur)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


@dataclass
class Metering:
    ledger: UsageLedger
    catalogue: LivePriceCatalogue
    pusher: CloudEventsPusher | None

    @classmethod
    async def start(
        cls,
        config: RuntimeConfig,
        store: Store,
        bus: InvalidationBus,
        *,
        worker_index: int,
        flush_in_process: bool = True,
    ) -> Metering:
        """Raises ``StoreError`` (prices unreadable), ``JournalBusy``/``OSError`` (the
        journal), ``ValueError`` (a push header's secret cannot be read)."""
        spec = config.metering
        push = push_settings(spec.cloudevents) if spec.cloudevents is not None else None
        catalogue = LivePriceCatalogue(spec.prices, store.usage.prices)
        if flush_in_process:  # else a FlusherProcess prices (metering/flush_process.py)
            bus.subscribe(TOPIC_PRICES, catalogue.invalidate)
            bus.on_reconnect(catalogue.invalidate)
            await catalogue.start()
        ledger = UsageLedger(
            Path(config.server.data_dir) / "usage" / f"journal-{worker_index}.db",
            ledger_sink(config, store) if flush_in_process else None,
            catalogue,
            commit_interval_s=spec.journal_commit_interval_ms / 1000,
            survives_power_loss=spec.journal_sync == "full",
        )
        try:
            await ledger.start()  # re-sends whatever a previous run left in the journal
        except BaseException:
            await catalogue.close()
            raise
        pusher = None
        if push is not None:
            pusher = CloudEventsPusher(push, store.usage, store.usage.push, owner=process_name())
            pusher.start()
        return cls(ledger, catalogue, pusher)

    async def close(self) -> None:
        if self.pusher is not None:
            await self.pusher.close()
        await self.ledger.close()
        await self.catalogue.close()
