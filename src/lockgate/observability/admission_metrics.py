"""Admission metrics, read from the admission stage's own counters at scrape time.

The admitter already counts its decisions (``AdmissionStats``, one
``GateStats`` per saturated model) and the Redis limiter its backend
failures, as plain integers. Reading them when Prometheus scrapes costs the
hot path nothing, and keeps one source of truth: the counters the admission
tests check are the ones on the dashboard.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from lockgate.admission.admitter import AdmissionStats
from lockgate.admission.fair_queue import GateStats


class AdmissionSource(Protocol):
    """What ``LimitAdmitter`` offers: its decision counters and its gates' counters."""

    @property
    def stats(self) -> AdmissionStats: ...

    def gate_stats(self) -> Mapping[str, GateStats]: ...


class LimiterHealth(Protocol):
    """What ``RedisLimiter`` offers: failed calls to its backend, counted per call."""

    @property
    def backend_failures(self) -> int: ...


class GateLoad(Protocol):
    """What ``CapacityGate`` offers about right now: slots in use, requests waiting."""

    @property
    def capacity(self) -> int: ...

    @property
    def in_flight(self) -> int: ...

    @property
    def queued(self) -> int: ...


class AdmissionCollector:
    """A Prometheus collector over the admission stage of one worker.

    Each argument is optional, so a worker without admission control (or
    without Redis) still exposes the same names, at zero. ``gates`` returns
    the live gates by model name (``{name: gate}``), for the in-flight and
    queued gauges; the admitter keeps them private, so the caller supplies
    the accessor.
    """

    def __init__(
        self,
        admitter: AdmissionSource | None = None,
        limiter: LimiterHealth | None = None,
        gates: Callable[[], Mapping[str, GateLoad]] | None = None,
    ) -> None:
        self._admitter = admitter
        self._limiter = limiter
        self._gates = gates

    def collect(self) -> Iterator[Metric]:
        yield from self._decisions()
        yield from self._queues()
        yield CounterMetricFamily(
            "lockgate_limiter_backend_failures",
            "Calls to the shared limiter (Redis) that failed; admission then decides "
            "locally or refuses, per admission.on_backend_failure.",
            value=self._limiter.backend_failures if self._limiter is not None else 0,
        )

    def _decisions(self) -> Iterator[Metric]:
        stats = self._admitter.stats if self._admitter is not None else AdmissionStats()
        decisions = CounterMetricFamily(
            "lockgate_admission_decisions",
            "Admission outcomes: admitted by the limits, refused by a limit, limiter "
            "unavailable, blocked, over a per-request cap.",
            labels=("outcome",),
        )
        decisions.add_metric(("admitted",), stats.admitted)
        decisions.add_metric(("refused",), sum(stats.refused.values()))
        decisions.add_metric(("unavailable",), stats.unavailable)
        decisions.add_metric(("blocked",), stats.blocked)
        decisions.add_metric(("over_cap",), stats.over_cap)
        yield decisions
        refusals = CounterMetricFamily(
            "lockgate_admission_refusals",
            "Requests refused by a limit, by the limit's scope and dimension.",
            labels=("scope", "dimension"),
        )
        for (scope, dimension), count in tuple(stats.refused.items()):
            refusals.add_metric((scope, dimension), count)
        yield refusals
        yield CounterMetricFamily(
            "lockgate_admission_degraded",
            "Decisions taken locally because the shared limiter failed.",
            value=stats.degraded,
        )
        shed = CounterMetricFamily(
            "lockgate_admission_shed",
            "Requests turned away by a saturated model's queue, by reason.",
            labels=("reason",),
        )
        for reason, count in tuple(stats.shed.items()):
            shed.add_metric((reason,), count)
        yield shed

    def _queues(self) -> Iterator[Metric]:
        gate_stats = self._gate_stats()
        granted = CounterMetricFamily(
            "lockgate_queue_slots_granted",
            "Capacity slots granted by a saturated model's gate, at once or after waiting.",
            labels=("model",),
        )
        waited = CounterMetricFamily(
            "lockgate_queue_waits",
            "Slots granted only after waiting in the queue.",
            labels=("model",),
        )
        wait_s = CounterMetricFamily(
            "lockgate_queue_wait_seconds",
            "Summed queue wait of the requests that waited.",
            labels=("model",),
        )
        rejected = CounterMetricFamily(
            "lockgate_queue_rejections",
            "Requests the queue refused or gave up on, by reason.",
            labels=("model", "reason"),
        )
        for model, stats in gate_stats.items():
            granted.add_metric((model,), stats.admitted)
            waited.add_metric((model,), stats.waited)
            wait_s.add_metric((model,), stats.wait_s_total)
            for reason in ("queue_full", "deadline", "shed", "over_share", "cancelled"):
                rejected.add_metric((model, reason), getattr(stats, reason))
        yield from (granted, waited, wait_s, rejected)
        loads = dict(self._gates()) if self._gates is not None else {}
        in_flight = GaugeMetricFamily(
            "lockgate_queue_in_flight",
            "Capacity slots in use per saturated model.",
            labels=("model",),
        )
        queued = GaugeMetricFamily(
            "lockgate_queue_queued",
            "Requests waiting for a slot per saturated model.",
            labels=("model",),
        )
        capacity = GaugeMetricFamily(
            "lockgate_queue_capacity",
            "Capacity slots per saturated model (summed over workers: each has its own gate).",
            labels=("model",),
        )
        for model, gate in loads.items():
            in_flight.add_metric((model,), gate.in_flight)
            queued.add_metric((model,), gate.queued)
            capacity.add_metric((model,), gate.capacity)
        yield from (in_flight, queued, capacity)

    def _gate_stats(self) -> dict[str, GateStats]:
        """The admitter's gates; a scrape from another thread may race the loop adding
        one (first request for a model), which ``dict`` iteration reports: read again."""
        if self._admitter is None:
            return {}
        for _ in range(3):
            try:
                return dict(self._admitter.gate_stats())
            except RuntimeError:
                continue
        return {}
