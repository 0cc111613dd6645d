"""The scheduler on its own: capacity, FIFO queue, cancellation, KV usage, timing."""

from __future__ import annotations

import asyncio
import time

import pytest

from lockgate.sim import Engine, SimConfig
from lockgate.sim.engine import QueueFull, Sequence


async def test_capacity_queues_fifo_and_hands_slots_over() -> None:
    engine = Engine(SimConfig(capacity=2, ttft_ms=0, tokens_per_s=0))
    a = engine.submit(10)
    b = engine.submit(10)
    c = engine.submit(10)
    d = engine.submit(10)
    assert (engine.running, engine.waiting) == (2, 2)
    assert a.is_running
    assert b.is_running
    assert not c.is_running
    order: list[str] = []

    async def wait(name: str, seq: Sequence) -> None:
        await seq.admitted()
        order.append(name)

    tasks = [asyncio.create_task(wait("d", d)), asyncio.create_task(wait("c", c))]
    await asyncio.sleep(0)
    assert order == []
    b.finish()
    await asyncio.sleep(0)
    assert order == ["c"]
    assert (engine.running, engine.waiting) == (2, 1)
    a.finish()
    await asyncio.gather(*tasks)
    assert order == ["c", "d"]
    c.finish()
    d.finish()
    d.finish()  # idempotent
    assert (engine.running, engine.waiting, engine.kv_tokens) == (0, 0, 0)


async def test_cancelled_waiter_leaves_the_queue_without_taking_a_slot() -> None:
    engine = Engine(SimConfig(capacity=1))
    first = engine.submit(5)
    queued = engine.submit(5)
    task = asyncio.create_task(queued.admitted())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    queued.finish()
    assert engine.waiting == 0
    first.finish()
    assert engine.running == 0


async def test_max_waiting_raises_queue_full() -> None:
    engine = Engine(SimConfig(capacity=1, max_waiting=1))
    engine.submit(1)
    engine.submit(1)
    with pytest.raises(QueueFull):
        engine.submit(1)


async def test_kv_usage_counts_prompt_and_generated_tokens_of_running_requests() -> None:
    engine = Engine(SimConfig(kv_cache_tokens=1000, capacity=1))
    seq = engine.submit(100)
    engine.submit(300)  # waiting requests hold no KV
    seq.produce(50)
    assert engine.kv_cache_usage == pytest.approx(0.15)
    assert engine.completion_tokens_total == 50
    seq.finish()
    assert engine.kv_cache_usage == pytest.approx(0.3)  # the queued one started


async def test_decode_rate_and_batch_slowdown() -> None:
    config = SimConfig(ttft_ms=0, prefill_ms_per_token=0, tokens_per_s=500, capacity=4)
    engine = Engine(config)
    seq = engine.submit(1)
    assert engine.slowdown_factor() == pytest.approx(1.25)
    for _ in range(4):
        engine.submit(1)  # one waits: the batch is full
    assert engine.slowdown_factor() == pytest.approx(2.0)
    await seq.prefill()
    start = time.perf_counter()
    for _ in range(10):
        await seq.decode()
    elapsed = time.perf_counter() - start
    # 10 gaps of 2 ms x 2.0 (full batch) = 40 ms; sleep overheads do not accumulate.
    assert 0.035 < elapsed < 0.08


async def test_prefill_time_counts_only_uncached_tokens() -> None:
    config = SimConfig(ttft_ms=5, prefill_ms_per_token=1.0, block_size=16)
    engine = Engine(config)
    hashes = [hash(("block", i)) for i in range(4)]
    cold = engine.submit(65, [(65, hashes)])
    start = time.perf_counter()
    await cold.prefill()
    cold_s = time.perf_counter() - start
    cold.finish()
    warm = engine.submit(65, [(65, hashes)])
    assert warm.cached_tokens == 64
    start = time.perf_counter()
    await warm.prefill()
    warm_s = time.perf_counter() - start
    warm.finish()
    assert cold_s >= 0.068  # 5 + 65 x 1 ms
    assert warm_s < 0.03  # 5 + 1 x 1 ms
    assert engine.prefix_cache_queries == 130
    assert engine.prefix_cache_hits == 64


def test_per_request_usage_keeps_the_newest_and_forgets_the_oldest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("lockgate.sim.engine.MAX_TRACKED_REQUESTS", 3)
    engine = Engine(SimConfig(capacity=100, ttft_ms=0, tokens_per_s=0))
    for n in range(5):
        engine.submit(10 + n, request_id=b"r%d" % n).finish()
    assert list(engine.usage_by_request) == ["r2", "r3", "r4"]
    assert engine.usage_by_request["r4"][0] == 14
