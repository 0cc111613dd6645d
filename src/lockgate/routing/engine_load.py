"""Engine-reported load: running and waiting requests and KV-cache use, from /metrics.

A worker's own outstanding count sees only its own requests. The engine sees
everything: other workers', other gateway replicas', and how full its KV cache
is (a full cache means preemption and recomputation soon). vLLM, SGLang, TGI,
llama.cpp's server, TensorRT-LLM (trtllm-serve, or Triton's backend) and NVIDIA Dynamo
publish this as Prometheus gauges; for models with ``routing.engine_metrics``
one owned background task scrapes each deployment every ``interval_s`` and
keeps the last reading on its member, where the load score reads it:

    pressure = max(outstanding, running + waiting) + waiting
    load     = (pressure + 1) / capacity * (1 + kv_cache_use)

The maximum avoids counting our own requests twice (the engine already counts
them, our count is just fresher); waiting requests count double because they
predict time to first token far more than running ones; KV use above zero makes
a replica near preemption look busier than its request count says.

A failed scrape keeps the last reading until it is ``stale_after_s`` old, then
drops it (the member falls back to its own outstanding count): a dead metrics
endpoint must not freeze a replica's score.

``waiting(model)`` is the engine-reported queue of a whole model, for admission
to treat as saturation.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from lockgate.config import DeploymentTarget
from lockgate.routing.member import Member
from lockgate.routing.pool import Pool
from lockgate.routing.spec import EngineMetricsSpec
from lockgate.routing.watcher import PoolWatcher

log = logging.getLogger("lockgate.routing")

# What a gauge means for the load score.
_RUNNING, _WAITING, _IN_FLIGHT, _KV_USE = range(4)
# Metric names by what they mean: vLLM (both KV names: it renamed the gauge in 0.10),
# SGLang, TGI (no KV gauge), llama.cpp's llama-server (with --metrics), TensorRT-LLM's
# trtllm-serve, and NVIDIA Dynamo (its frontend's queue; the workers' KV statistics).
# Dynamo's frontend counts every request in flight, the queued ones included: what it
# adds to the running count is the difference.
_MEANINGS = {
    **dict.fromkeys(
        (
            b"vllm:num_requests_running",
            b"sglang:num_running_reqs",
            b"tgi_batch_current_size",
            b"llamacpp:requests_processing",
            b"trtllm_num_requests_running",
        ),
        _RUNNING,
    ),
    **dict.fromkeys(
        (
            b"vllm:num_requests_waiting",
            b"sglang:num_queue_reqs",
            b"tgi_queue_size",
            b"llamacpp:requests_deferred",
            b"trtllm_num_requests_waiting",
            b"dynamo_frontend_queued_requests",
        ),
        _WAITING,
    ),
    b"dynamo_frontend_inflight_requests": _IN_FLIGHT,
    **dict.fromkeys(
        (
            b"vllm:kv_cache_usage_perc",
            b"vllm:gpu_cache_usage_perc",
            b"sglang:token_usage",
            b"llamacpp:kv_cache_usage_ratio",
            b"trtllm_kv_cache_utilization",
            b"dynamo_component_kvstats_gpu_cache_usage_percent",
        ),
        _KV_USE,
    ),
}
# Triton's TensorRT-LLM backend puts the meaning in a label of one gauge.
_LABELLED = {
    b"nv_trt_llm_request_metrics": {
        b'request_type="scheduled"': _RUNNING,
        b'request_type="waiting"': _WAITING,
    },
    b"nv_trt_llm_kv_cache_block_metrics": {b'kv_cache_block_type="fraction"': _KV_USE},
}
_WANTED = frozenset(_MEANINGS) | frozenset(_LABELLED)

# Returns the body of GET ``spec.path`` on the deployment (raises on any failure).
Fetch = Callable[[DeploymentTarget, EngineMetricsSpec], Awaitable[bytes]]


@dataclass(frozen=True, slots=True)
class EngineReading:
    running: float
    waiting: float
    kv_cache_use: float  # 0..1
    at: float  # event-loop seconds

    @property
    def pressure_base(self) -> float:
        return self.running + self.waiting


def parse_engine_metrics(text: bytes, at: float) -> EngineReading | None:
    """The reading in a Prometheus text page, or None if it has none of the names.

    Series of one name are summed (vLLM with data parallelism has one per engine),
    except KV use, where the fullest engine counts. KV use is a fraction (Dynamo's
    ``..._percent`` too, despite its name), capped at 1.
    """
    running = waiting = in_flight = kv = 0.0
    found = False
    for line in text.splitlines():
        if not line or line[0] == 35:  # '#'
            continue
        brace = line.find(b"{")
        space = line.find(b" ")
        end = brace if 0 <= brace < space or (brace >= 0 > space) else space
        if end <= 0 or line[:end] not in _WANTED:
            continue
        name = line[:end]
        close = line.rfind(b"}")
        rest = line[close + 1 :] if brace == end else line[end:]
        try:
            value = float(rest.split()[0])
        except (IndexError, ValueError):
            continue
        if value != value or value < 0:  # NaN or nonsense
            continue
        meaning = _MEANINGS.get(name)
        if meaning is None:  # a labelled gauge: which series is it?
            labels = line[brace:close] if brace == end else b""
            by_label = _LABELLED[name].items()
            meaning = next((m for label, m in by_label if label in labels), None)
            if meaning is None:
                continue
        found = True
        if meaning == _RUNNING:
            running += value
        elif meaning == _WAITING:
            waiting += value
        elif meaning == _IN_FLIGHT:
            in_flight += value
        else:
            kv = max(kv, min(value, 1.0))
    running += max(in_flight - waiting, 0.0)
    return EngineReading(running, waiting, kv, at) if found else None


class EngineLoadScraper(PoolWatcher):
    """Scrapes the deployments of models that ask for it; one owned task, like health checks.

    Lifecycle: ``start()`` inside the running loop, ``close()`` (or ``await stop()``).
    """

    def __init__(
        self,
        pools: Sequence[Pool],
        fetch: Fetch,
        on_round: Callable[[str, float | None], None] | None = None,
    ) -> None:
        """``on_round(model, waiting)`` hears each model's ``waiting`` after every scrape
        round (admission shrinks the model's capacity gate while its engines queue)."""
        super().__init__([p for p in pools if p.spec.engine_metrics is not None])
        self._by_model = {p.model.name: p for p in self._watched}
        self._fetch = fetch
        self._on_round = on_round

    def waiting(self, model_name: str) -> float | None:
        """Requests the model's engines report as queued (fresh readings only), or None
        when the model is not scraped or no reading is fresh. For admission: a model
        whose engines queue is saturated, whatever the gateway's own counts say."""
        pool = self._by_model.get(model_name)
        if pool is None:
            return None
        readings = [m.engine for m in pool.members if m.engine is not None]
        if not readings:
            return None
        return sum(r.waiting for r in readings)

    async def _watch(self, pool: Pool) -> None:
        spec = pool.spec.engine_metrics
        assert spec is not None
        while True:
            # Members are re-read every round: deployments may come and go.
            await asyncio.gather(*(self._scrape(m, spec) for m in pool.members))
            if self._on_round is not None:
                self._on_round(pool.model.name, self.waiting(pool.model.name))
            await asyncio.sleep(spec.interval_s)

    async def _scrape(self, member: Member, spec: EngineMetricsSpec) -> None:
        loop = asyncio.get_running_loop()
        reading: EngineReading | None = None
        try:
            async with asyncio.timeout(spec.timeout_s):
                text = await self._fetch(member.target, spec)
            reading = parse_engine_metrics(text, loop.time())
        except Exception as exc:  # a failed scrape is routine (the replica may be down)
            log.debug("scraping %s%s failed: %s", member.name, spec.path, exc)
        now = loop.time()
        if reading is not None:
            member.engine = reading
        elif member.engine is not None and now - member.engine.at > spec.stale_after_s:
            member.engine = None
