"""The ledger end to end in one process: settle → journal → flusher → store, exactly once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from lockgate.errors import ErrorSource, UpstreamFailure
from lockgate.metering.capture import capture, complete
from lockgate.metering.flusher import LedgerFlusher
from lockgate.metering.journal import JournalBusy
from lockgate.metering.journal_reader import JournalReader
from lockgate.metering.ledger import UsageLedger
from lockgate.metering.pricing import PriceCatalogue, PriceEntry
from lockgate.metering.record import UsageRecord
from lockgate.store import Invalid, Store, StoreUnavailable
from lockgate.store.repositories.usage import Granularity
from lockgate.usage import Usage
from tests.metering.support import principal, record, settled_context

EVER = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))


async def drained(ledger: UsageLedger, timeout_s: float = 20.0) -> None:
    """Wait until everything settled so far is durable and in the store."""
    async with asyncio.timeout(timeout_s):
        await ledger.flush()


async def all_records(store: Store) -> list[UsageRecord]:
    found: list[UsageRecord] = []
    after = None
    while True:
        page = await store.usage.list(
            organization_id=None, start=EVER[0], end=EVER[1], limit=1000, after=after
        )
        found.extend(page)
        if len(page) < 1000:
            return found
        after = (page[-1].occurred_at, page[-1].record_id)


def usage_for(i: int) -> Usage:
    return Usage(
        prompt_tokens=100 + i, completion_tokens=i % 37, cached_tokens=i % 5, reasoning_tokens=i % 3
    )


async def test_every_record_is_flushed_exactly_once(store: Store, tmp_path: Path) -> None:
    ledger = UsageLedger(tmp_path / "journal.db", store.usage, batch_size=128)
    await ledger.start()
    try:
        settled = 1_500
        for i in range(settled):
            ledger.settle(settled_context(f"req-{i}", usage=usage_for(i)))
            if i % 100 == 0:
                await asyncio.sleep(0)  # let the flusher interleave, as traffic would
        await drained(ledger)
        records = await all_records(store)
        assert sorted(r.request_id for r in records) == sorted(f"req-{i}" for i in range(settled))
        assert len({r.record_id for r in records}) == settled
        # The ledger's tokens are exactly what was settled.
        assert sum(r.prompt_tokens for r in records) == sum(100 + i for i in range(settled))
        assert sum(r.completion_tokens for r in records) == sum(i % 37 for i in range(settled))
        assert sum(r.cached_tokens for r in records) == sum(i % 5 for i in range(settled))
        assert sum(r.reasoning_tokens for r in records) == sum(
            min(i % 3, i % 37) for i in range(settled)
        )
        assert ledger.stats is not None
        assert (ledger.stats.flushed, ledger.stats.duplicates) == (settled, 0)
        assert ledger.journal.durable == ledger.journal.appended == settled
    finally:
        await ledger.close()


async def test_a_resent_batch_changes_nothing(store: Store, tmp_path: Path) -> None:
    # Journal only (no flusher), as if the process died before it flushed.
    path = tmp_path / "journal.db"
    ledger = UsageLedger(path, None)
    await ledger.start()
    for i in range(300):
        ledger.settle(settled_context(f"req-{i}", usage=usage_for(i)))
        if i % 100 == 99:
            await ledger.sync()  # three group commits of 100
    await ledger.close()
    reader = JournalReader(path)
    flusher = LedgerFlusher(reader, store.usage, ledger.complete, batch_size=100)
    try:
        # Two of the three batches reach the store; then everything it has is re-sent.
        first = await flusher.flush_once()
        second = await flusher.flush_once()
        assert (first, second) == (100, 100)
        records = await all_records(store)
        assert await store.usage.insert_many(records) == 0
        assert await flusher.flush_pending(10.0)
        assert (flusher.stats.flushed, flusher.stats.inserted) == (300, 300)
        assert len(await all_records(store)) == 300
    finally:
        flusher.close()


async def test_a_crash_between_store_commit_and_journal_delete_is_resent_once(
    store: Store, tmp_path: Path
) -> None:
    path = tmp_path / "journal.db"
    ledger = UsageLedger(path, None)
    await ledger.start()
    for i in range(50):
        ledger.settle(settled_context(f"req-{i}", usage=usage_for(i)))
    await ledger.close()
    reader = JournalReader(path)
    [entry] = reader.pending(1000)
    reader.close()
    # What the flusher had committed to the store before it died.
    first_30 = zip(entry.record_ids[:30], entry.items[:30], strict=True)
    assert await store.usage.insert_many([ledger.complete(i, item) for i, item in first_30]) == 30
    # Restart: the whole journal is re-sent; the 30 are skipped.
    restarted = UsageLedger(path, store.usage)
    await restarted.start()
    try:
        await drained(restarted)
        assert restarted.stats is not None
        assert (restarted.stats.inserted, restarted.stats.duplicates) == (20, 30)
        assert len(await all_records(store)) == 50
    finally:
        await restarted.close()


async def test_records_journalled_while_nothing_flushes_arrive_after_a_restart(
    store: Store, tmp_path: Path
) -> None:
    path = tmp_path / "journal.db"
    first = UsageLedger(path, None)
    await first.start()
    for i in range(40):
        first.settle(settled_context(f"req-{i}", usage=usage_for(i)))
    await first.sync()
    await first.close()
    second = UsageLedger(path, store.usage)
    await second.start()
    try:
        second.settle(settled_context("req-after", usage=usage_for(1)))
        await drained(second)
        assert len(await all_records(store)) == 41
    finally:
        await second.close()


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_what_a_record_says(store: Store, tmp_path: Path) -> None:
    catalogue = PriceCatalogue(
        [
            PriceEntry(
                id="llama-2026",
                model="llama",
                effective_from=datetime(2020, 1, 1, tzinfo=UTC),
                input_per_million="2",
                output_per_million="8",
                request_fee="0.001",
            )
        ]
    )
    ledger = UsageLedger(tmp_path / "journal.db", store.usage, catalogue)
    await ledger.start()
    body = b"x" * 401
    try:
        ledger.settle(
            settled_context(
                "ok", usage=Usage(prompt_tokens=10, completion_tokens=4), is_stream=True
            )
        )
        ledger.settle(settled_context("cut", usage=None, body=body, is_client_disconnected=True))
        ledger.settle(
            settled_context(
                "bad-gateway",
                usage=None,
                error=UpstreamFailure("engine said 500"),
                who=principal("org_b", "prj_b", "key_b"),
            )
        )
        ledger.settle(settled_context("never-sent", usage=None, reached_upstream=False))
        await drained(ledger)
    finally:
        await ledger.close()
    by_request = {r.request_id: r for r in await all_records(store)}
    ok = by_request["ok"]
    assert (ok.prompt_tokens, ok.completion_tokens, ok.is_estimated) == (10, 4, False)
    assert (ok.api_key_id, ok.organization_id, ok.project_id) == ("key_a", "org_a", "prj_a")
    assert (ok.deployment, ok.upstream_model) == ("vllm-a", "meta-llama/Llama-3.1-8B-Instruct")
    assert ok.ttft_ms == pytest.approx(50.0)
    assert ok.total_ms == pytest.approx(250.0)
    assert (ok.price_id, ok.currency, ok.cost_micros) == (
        "llama-2026",
        "USD",
        10 * 2 + 4 * 8 + 1000,
    )
    cut = by_request["cut"]
    # No usage from the upstream: the prompt estimated from the body, flagged.
    assert (cut.prompt_tokens, cut.completion_tokens, cut.is_estimated) == (101, 0, True)
    assert cut.is_client_disconnected
    assert cut.ttft_ms is None
    bad = by_request["bad-gateway"]
    assert (bad.organization_id, bad.error_source, bad.status) == (
        "org_b",
        ErrorSource.UPSTREAM.value,
        502,
    )
    assert bad.error_code == UpstreamFailure.code
    never = by_request["never-sent"]
    assert (never.prompt_tokens, never.is_estimated, never.deployment) == (0, False, None)
    assert never.cost_micros == 0  # no fee without an upstream
    aggregate = await store.usage.aggregate(
        organization_id="org_a", start=EVER[0], end=EVER[1], granularity=Granularity.MONTH
    )
    assert sum(b.requests for b in aggregate) == 3  # org_b's request is not org_a's


class FlakySink:
    """Refuses while ``is_down``; refuses one record as invalid, always."""

    def __init__(self, poison: str) -> None:
        self.is_down = True
        self.poison = poison
        self.rows: dict[str, UsageRecord] = {}

    async def insert_many(self, records: Sequence[UsageRecord]) -> int:
        if self.is_down:
            raise StoreUnavailable("database unavailable: connection refused")
        if any(r.request_id == self.poison for r in records):
            raise Invalid("the values break a schema rule")
        new = [r for r in records if r.record_id not in self.rows]
        self.rows.update((r.record_id, r) for r in new)
        return len(new)


async def test_an_unavailable_store_is_retried_and_a_poison_record_quarantined(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sink = FlakySink(poison="req-7")
    ledger = UsageLedger(tmp_path / "journal.db", sink, batch_size=8, flush_interval_s=0.01)
    await ledger.start()
    try:
        with caplog.at_level(logging.WARNING):
            for i in range(20):
                ledger.settle(settled_context(f"req-{i}", usage=usage_for(i)))
            await ledger.sync()
            await asyncio.sleep(0.3)
            assert ledger.stats is not None
            assert ledger.stats.failures > 0
            assert not ledger.stats.is_store_available
            assert sink.rows == {}
            sink.is_down = False
            await drained(ledger)
        assert sorted(r.request_id for r in sink.rows.values()) == sorted(
            f"req-{i}" for i in range(20) if i != 7
        )
        assert ledger.stats.quarantined == 1
        assert ledger.stats.is_store_available
        assert "the store is unavailable" in caplog.text
        assert "the store is back" in caplog.text
        assert "quarantined" in caplog.text
    finally:
        await ledger.close()
    reader = JournalReader(tmp_path / "journal.db")
    assert (reader.count(), reader.quarantined()) == (0, 1)
    reader.close()


async def test_one_process_appends_to_a_journal_at_a_time(tmp_path: Path) -> None:
    first = UsageLedger(tmp_path / "journal.db", None)
    await first.start()
    try:
        with pytest.raises(JournalBusy):
            await UsageLedger(tmp_path / "journal.db", None).start()
    finally:
        await first.close()
    again = UsageLedger(tmp_path / "journal.db", None)
    await again.start()
    await again.close()


async def test_an_item_that_cannot_be_completed_is_quarantined_not_lost(
    store: Store, tmp_path: Path
) -> None:
    ledger = UsageLedger(tmp_path / "journal.db", store.usage)
    await ledger.start()
    try:
        ledger.settle(settled_context("before", usage=usage_for(1)))
        ledger.journal.append(["written by a version with another layout"])
        ledger.settle(settled_context("after", usage=usage_for(2)))
        await drained(ledger)
        assert sorted(r.request_id for r in await all_records(store)) == ["after", "before"]
        assert ledger.stats is not None
        assert ledger.stats.quarantined == 1
    finally:
        await ledger.close()


async def test_nonsense_from_clients_and_upstreams_is_stored_not_blocking(
    store: Store, tmp_path: Path
) -> None:
    ledger = UsageLedger(tmp_path / "journal.db", store.usage)
    await ledger.start()
    try:
        # An unknown model name with a NUL (PostgreSQL text cannot hold one), very long.
        ctx = settled_context("nul", usage=Usage(prompt_tokens=1), model="gpt\x00" + "x" * 1000)
        ledger.settle(ctx)
        # An upstream reporting absurd counts: floats, negatives, beyond 64 bits.
        absurd = Usage(prompt_tokens=1e30, completion_tokens=-5, cached_tokens=7.9)  # type: ignore[arg-type]
        ledger.settle(settled_context("absurd", usage=absurd))
        ledger.settle(settled_context("fine", usage=usage_for(3)))
        await drained(ledger)
    finally:
        await ledger.close()
    by_request = {r.request_id: r for r in await all_records(store)}
    assert set(by_request) == {"nul", "absurd", "fine"}
    assert by_request["nul"].model == "gpt\ufffd" + "x" * 252
    absurd_record = by_request["absurd"]
    assert (absurd_record.prompt_tokens, absurd_record.completion_tokens) == (10**12, 0)
    assert absurd_record.cached_tokens == 7


@pytest.mark.parametrize("backend", ["postgresql"])
async def test_values_postgresql_refuses_are_invalid_not_an_outage(store: Store) -> None:
    # Invalid makes the flusher set the record aside; any other StoreError is retried.
    with pytest.raises(Invalid, match="22003"):
        await store.usage.insert_many([record("too-big")._replace(status=2**40)])
    assert await store.usage.insert_many([record("fine")]) == 1


def test_a_stream_cut_without_usage_is_billed_for_what_the_client_was_sent() -> None:
    ctx = settled_context("cut", is_stream=True, is_client_disconnected=True)
    ctx.output_events = 17  # the relay counted 17 events with output before the cut
    cut = complete("ur_x_1_0", capture(ctx), PriceCatalogue())
    assert (cut.completion_tokens, cut.is_estimated) == (17, True)
    never = settled_context("never", is_stream=True, reached_upstream=False)
    never.output_events = 5  # impossible without an upstream, and ignored if it happened
    assert complete("ur_x_2_0", capture(never), PriceCatalogue()).completion_tokens == 0


def test_a_journal_written_before_output_events_is_still_read() -> None:
    ctx = settled_context("old", is_stream=True)
    ctx.usage = Usage(prompt_tokens=3, completion_tokens=2)
    layout_1 = capture(ctx)[:-1]  # as a gateway before layout 2 journalled it
    assert complete("ur_x_3_0", layout_1, PriceCatalogue()).completion_tokens == 2
    with pytest.raises(ValueError, match="fields"):
        complete("ur_x_4_0", layout_1[:-1], PriceCatalogue())
