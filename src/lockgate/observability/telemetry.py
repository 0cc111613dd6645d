"""One worker's telemetry: request metrics, the node's merged page, the access log, traces."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from lockgate.admission.admitter import LimitAdmitter
from lockgate.config import RuntimeConfig
from lockgate.dataplane.pipeline.admit import Admitter
from lockgate.dataplane.pipeline.settle import Settler
from lockgate.observability.access_log import AccessLog
from lockgate.observability.admission_metrics import AdmissionCollector, LimiterHealth
from lockgate.observability.metrics import GatewayMetrics
from lockgate.observability.node import NodeMetrics
from lockgate.observability.prompt_log import PromptRedactor
from lockgate.startup import metrics_directory

if TYPE_CHECKING:
    from lockgate.observability.tracing import Tracing


@dataclass
class Telemetry:
    """Metrics and the access log of one worker: settlers for the pipeline, a page to scrape."""

    metrics: GatewayMetrics
    node: NodeMetrics
    access_log: AccessLog | None
    # observability.metrics: False keeps ``metrics`` off the hot path (scrape-time only).
    has_request_metrics: bool = True
    # OpenTelemetry traces (observability.tracing); None when off. The data plane takes it
    # (``DataPlane(tracing=...)``) to give requests their trace context.
    tracing: Tracing | None = None

    @classmethod
    def build(
        cls, config: RuntimeConfig, admitter: Admitter, *, has_ledger_process: bool = False
    ) -> Telemetry:
        """``has_ledger_process``: a ``lockgate-ledger`` process shares this node's metrics
        (``serve`` with metering on), so snapshots go to the node's directory."""
        settings = config.observability
        metrics = GatewayMetrics(
            # Versions serve as name@version: each is a label value of its own.
            models=[e.name for m in config.models for e in (m, *m.versions)],
            deployments=[
                d.name for m in config.models for e in (m, *m.versions) for d in e.deployments
            ],
            by_project=settings.metrics_by_project,
            max_projects=settings.max_projects,
        )
        prompts = settings.prompt_logging
        access_log = (
            AccessLog(
                settings.access_log,
                prompts=PromptRedactor.from_spec(prompts) if prompts.enabled else None,
            )
            if settings.access_log
            else None
        )
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
        node = NodeMetrics(
            metrics, metrics_directory(config, has_ledger_process=has_ledger_process)
        )
        tracing = None
        if settings.tracing.enabled:  # OpenTelemetry is imported only when tracing is on
            from lockgate.observability.tracing import Tracing

            tracing = Tracing.from_spec(settings.tracing)
        return cls(metrics, node, access_log, settings.metrics, tracing)

    @property
    def settlers(self) -> tuple[Settler, ...]:
        metrics: tuple[Settler, ...] = (self.metrics,) if self.has_request_metrics else ()
        logged = metrics if self.access_log is None else (*metrics, self.access_log)
        return logged if self.tracing is None else (*logged, self.tracing)

    def start(self) -> None:
        if self.access_log is not None:
            self.access_log.start()

    def close(self) -> None:
        """After draining: the access log writes what is left, queued spans are exported."""
        if self.access_log is not None:
            self.access_log.close()
        if self.tracing is not None:
            self.tracing.close()

    async def render_metrics(self) -> tuple[str, bytes]:
        # Reading the other workers' snapshots takes milliseconds: off the event loop.
        return await asyncio.to_thread(self.node.render)
