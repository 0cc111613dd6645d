"""Upstream health and routing metrics, read from the router's live state at scrape time.

Routing already keeps, per worker, everything an on-call engineer asks about
an engine replica: whether it is ejected, what its breaker says, whether its
active health checks pass, how many requests it has outstanding, and per
model how many retries the budget granted or refused. Reading those plain
attributes when Prometheus scrapes costs the hot path nothing and keeps one
source of truth (the state the router acts on is the state on the dashboard).

Each worker judges health from its own traffic, so the gauges are per worker
and ``NodeMetrics`` sums them over live workers: ``lockgate_upstream_healthy``
is then "how many workers would send this deployment a request now", and 0
means none would. ``deployment_state`` is also what readiness asks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from enum import StrEnum
from typing import Protocol

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from lockgate.config import ModelEntry
from lockgate.routing.health import BreakerState
from lockgate.routing.member import Member
from lockgate.routing.pool import RoutePlan


class DeploymentState(StrEnum):
    """Whether this worker would send a deployment a request now, and if not, why."""

    HEALTHY = "healthy"
    EJECTED = "ejected"  # outlier ejection after consecutive failures
    CIRCUIT_OPEN = "circuit_open"  # the breaker opened on a failure rate
    CHECK_FAILING = "check_failing"  # active health checks say it is down


def breaker_state(member: Member, now: float) -> BreakerState:
    """The breaker's state as ``admits`` would see it now, without moving it (an open
    breaker whose ``open_s`` has passed lets a probe through: half-open)."""
    breaker = member.breaker
    if breaker is None:
        return BreakerState.CLOSED
    state = breaker.state
    if state is BreakerState.OPEN and now >= breaker.opened_until:
        return BreakerState.HALF_OPEN
    return state


def deployment_state(member: Member, now: float) -> DeploymentState:
    """Read-only: the same verdict as ``Member.admits`` (which may move a breaker from
    open to half-open, so a scrape or a readiness check must not call it)."""
    if now < member.outlier.ejected_until:
        return DeploymentState.EJECTED
    if not member.is_up:
        return DeploymentState.CHECK_FAILING
    if breaker_state(member, now) is BreakerState.OPEN:
        return DeploymentState.CIRCUIT_OPEN
    return DeploymentState.HEALTHY


def routed_entries(models: Iterable[ModelEntry]) -> list[str]:
    """The names whose pools serve requests: each model, or for a versioned model each
    of its versions (``name@version``, as the request metrics label them too)."""
    return [entry.name for model in models for entry in (model.versions or (model,))]


class PlanSource(Protocol):
    """What ``BalancingRouter`` offers: a model's live route plan by its name."""

    def plan_for(self, model_name: str) -> RoutePlan: ...


class RoutingCollector:
    """A Prometheus collector over one worker's router.

    ``models``: the configured model names (each has a plan); ``clock``: the
    event loop's ``time`` (the clock health state is stamped with). Safe to call
    from the scrape thread: it only reads attributes.
    """

    def __init__(
        self, router: PlanSource, models: Iterable[str], clock: Callable[[], float]
    ) -> None:
        self._plans = [(name, router.plan_for(name)) for name in models]
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        now = self._clock()
        labels = ("model", "deployment")
        healthy = GaugeMetricFamily(
            "lockgate_upstream_healthy",
            "1 when this worker would send the deployment a request now (not ejected, "
            "breaker not open, health checks passing); summed over workers.",
            labels=labels,
        )
        ejected = GaugeMetricFamily(
            "lockgate_upstream_ejected",
            "1 while the deployment is ejected after consecutive failures (outlier detection).",
            labels=labels,
        )
        check_up = GaugeMetricFamily(
            "lockgate_upstream_health_check_up",
            "1 when the deployment's active health checks pass (or none are configured).",
            labels=labels,
        )
        circuit = GaugeMetricFamily(
            "lockgate_upstream_circuit_state",
            "The deployment's circuit breaker: 1 for its current state (closed, open, "
            "half_open), 0 for the others.",
            labels=(*labels, "state"),
        )
        outstanding = GaugeMetricFamily(
            "lockgate_upstream_outstanding_requests",
            "Attempts sent to the deployment and not yet finished.",
            labels=labels,
        )
        ejections = CounterMetricFamily(
            "lockgate_upstream_ejections",
            "Times the deployment was ejected after consecutive failures.",
            labels=labels,
        )
        opens = CounterMetricFamily(
            "lockgate_upstream_circuit_opens",
            "Times the deployment's circuit breaker opened.",
            labels=labels,
        )
        retries = CounterMetricFamily(
            "lockgate_upstream_retries",
            "Retries the model's retry budget granted (another attempt after a failed one).",
            labels=("model",),
        )
        exhausted = CounterMetricFamily(
            "lockgate_upstream_retry_budget_exhausted",
            "Retries refused because the model's retry budget was spent.",
            labels=("model",),
        )
        for model, plan in self._plans:
            retries.add_metric((model,), plan.budget.retries_total)
            exhausted.add_metric((model,), plan.budget.exhausted_total)
            for member in plan.pool.members:
                key = (model, member.name)
                state = deployment_state(member, now)
                healthy.add_metric(key, 1 if state is DeploymentState.HEALTHY else 0)
                ejected.add_metric(key, 1 if now < member.outlier.ejected_until else 0)
                check_up.add_metric(key, 1 if member.is_up else 0)
                current = breaker_state(member, now)
                for candidate in BreakerState:
                    circuit.add_metric((*key, candidate.value), 1 if candidate is current else 0)
                outstanding.add_metric(key, member.outstanding)
                ejections.add_metric(key, member.outlier.ejections_total)
                breaker = member.breaker
                opens.add_metric(key, breaker.opens_total if breaker is not None else 0)
        yield from (healthy, ejected, check_up, circuit, outstanding, ejections, opens)
        yield from (retries, exhausted)
