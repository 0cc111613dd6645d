"""The gateway's request metrics: names, labels, buckets, and the settler that records them.

Why not ``prometheus_client.Counter``/``Histogram`` on the hot path: each of
their updates takes a ``threading.Lock`` (~0.4 µs per counter, ~1.2 µs per
histogram observation here; three times that in the library's multiprocess
mode, which writes an mmap on every update). One request updates a counter
and up to seven histograms, so that alone would be 5-20 µs of a ~65 µs
request. The event loop is the only writer, so plain integers in slotted
objects are enough: ``settle`` is one tuple lookup and a few additions.
``prometheus_client`` still provides the interfaces: ``registry`` and
``collect()`` work with its tools, and ``add_collector`` takes any of its
collectors. Rendering goes through ``exposition.Family`` (see there for why).

Names follow Prometheus conventions (base units, ``_total`` on counters) and,
where OpenTelemetry's GenAI semantic conventions define a metric, its name
mapped to Prometheus form (dots to underscores, unit suffix appended):
``gen_ai.server.time_to_first_token`` becomes
``gen_ai_server_time_to_first_token_seconds``, ``gen_ai.client.token.usage``
(a histogram of tokens per request, attribute ``gen_ai.token.type``) becomes
``gen_ai_client_token_usage`` with label ``gen_ai_token_type``: its ``_sum``
is the token counter. The full list is in docs/observability.md.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import cache
from itertools import accumulate

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from lockgate.dataplane.context import RequestContext
from lockgate.observability.exposition import (
    COUNTER,
    GAUGE,
    HISTOGRAM,
    Family,
    from_metrics,
    to_metrics,
)
from lockgate.observability.labels import NONE, BoundedLabel, status_class
from lockgate.observability.timings import request_timings
from lockgate.operations import Operation

# Buckets: OpenTelemetry's recommended boundaries where it has them, widened at
# the fast end (engines decode a token in well under 10 ms) and the slow end
# (long streams last minutes).
DURATION_BUCKETS_S = (0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12,
                      10.24, 20.48, 40.96, 81.92, 163.84, 327.68)  # fmt: skip
OVERHEAD_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                      0.1, 0.25, 0.5, 1.0)  # fmt: skip
TTFT_BUCKETS_S = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
                  2.5, 5.0, 7.5, 10.0, 30.0)  # fmt: skip
TPOT_BUCKETS_S = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2,
                  0.3, 0.4, 0.5, 0.75, 1.0, 2.5)  # fmt: skip
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
                 16777216, 67108864)  # fmt: skip

_REQUEST_LABELS = ("model", "deployment", "status_class", "error_source", "error_code")
_SERIES_LABELS = ("model", "deployment")
# Raw keys cached per worker; past this (only reachable with unbounded raw error
# codes or tenants) requests are bound without caching, slower but still bounded.
_MAX_CACHED_ROUTES = 20_000
_DISCONNECT = ("client", "client_disconnected")
# No status, no error, client still there: the pipeline ended on an unexpected exception.
_CRASHED = ("gateway", "internal_error")
# model, deployment, status, error code, error source, disconnected, project: as they
# come, before bounding; one dict lookup per request maps them to their cells.
_RouteKey = tuple[str | None, str | None, int, str | None, str | None, bool, str | None]


class Histogram:
    """Bucket counts and a sum; ``observe`` is a C bisect and two additions."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def row(self) -> list[float]:
        """Cumulative bucket counts, then the sum: a ``Family`` row."""
        return [*accumulate(self.counts), self.sum]


class _Count:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0


class _Series:
    """The histograms of one (model, deployment)."""

    __slots__ = (
        "duration",
        "input_tokens",
        "output_tokens",
        "overhead",
        "tpot",
        "ttft",
        "upstream",
    )

    def __init__(self) -> None:
        self.duration = Histogram(DURATION_BUCKETS_S)
        self.overhead = Histogram(OVERHEAD_BUCKETS_S)
        self.upstream = Histogram(DURATION_BUCKETS_S)
        self.ttft = Histogram(TTFT_BUCKETS_S)
        self.tpot = Histogram(TPOT_BUCKETS_S)
        self.input_tokens = Histogram(TOKEN_BUCKETS)
        self.output_tokens = Histogram(TOKEN_BUCKETS)


class _Route:
    """What one raw key updates: its request counter, its series, its project's tokens."""

    __slots__ = ("input_tokens", "output_tokens", "requests", "series")

    def __init__(
        self, requests: _Count, series: _Series, tokens: tuple[_Count, _Count] | None
    ) -> None:
        self.requests = requests
        self.series = series
        self.input_tokens = tokens[0] if tokens is not None else None
        self.output_tokens = tokens[1] if tokens is not None else None


class GatewayMetrics:
    """One worker's request metrics; a ``Settler`` (``settle(ctx)``) and a Prometheus collector.

    ``models``/``deployments``: the configured names; only these become label
    values (anything else is ``"other"``). Empty means "the first
    ``max_label_values`` seen". ``by_project`` adds a ``project`` label to the
    request counter and a per-project token counter (opt-in: one series per
    project), capped at ``max_projects`` distinct projects. Histograms never
    carry the project: that would multiply every bucket by the tenant count.

    It is the root of the worker's metrics: ``add_collector`` adds other
    collectors (admission, access log), ``families()`` is everything for
    ``NodeMetrics``, and ``registry`` (a ``CollectorRegistry`` of its own, never
    the global one) holds the same for ``prometheus_client`` tools.

    Construct after forking (one per worker process). ``settle`` and
    ``request_started`` run on the event loop's thread; ``families``/``collect``
    may run on another (a threaded admin endpoint): they read snapshots of the
    dicts, at worst mid-update of one request.
    """

    def __init__(
        self,
        *,
        models: Iterable[str] = (),
        deployments: Iterable[str] = (),
        by_project: bool = False,
        max_projects: int = 100,
        max_label_values: int = 200,
        max_error_codes: int = 100,
    ) -> None:
        self._model = BoundedLabel(max_label_values, models)
        self._deployment = BoundedLabel(max_label_values, deployments)
        self._code = BoundedLabel(max_error_codes)
        self._project = BoundedLabel(max_projects)
        self._by_project = by_project
        self._in_flight = 0
        self._routes: dict[_RouteKey, _Route] = {}
        self._requests: dict[tuple[str, ...], _Count] = {}
        self._series: dict[tuple[str, str], _Series] = {}
        self._project_tokens: dict[tuple[str, str], tuple[_Count, _Count]] = {}
        self._collectors: list[Collector] = []
        self.registry = CollectorRegistry()
        self.registry.register(self)

    # -- hot path ----------------------------------------------------------------------
    def request_started(self) -> None:
        """Count a request in flight; the data plane calls it just before the pipeline runs."""
        self._in_flight += 1

    def settle(self, ctx: RequestContext) -> None:
        # Without request_started the gauge stays 0 instead of going negative.
        if self._in_flight > 0:
            self._in_flight -= 1
        model = ctx.model
        deployment = ctx.deployment
        error = ctx.error
        key: _RouteKey = (
            model.name if model is not None else None,
            deployment.name if deployment is not None else None,
            ctx.status,
            error.code if error is not None else None,
            error.source if error is not None else None,
            ctx.is_client_disconnected,
            ctx.principal.project_id if self._by_project else None,
        )
        route = self._routes.get(key)
        if route is None:
            route = self._bind(key)
        route.requests.value += 1
        series = route.series
        total_s, gateway_s, upstream_s, ttft_s, tpot_s = request_timings(ctx)
        series.duration.observe(total_s)
        if upstream_s is not None:
            series.upstream.observe(upstream_s)
            series.overhead.observe(gateway_s)
            if ttft_s is not None:
                series.ttft.observe(ttft_s)
                if tpot_s is not None:
                    series.tpot.observe(tpot_s)
        usage = ctx.usage
        if usage is not None:
            series.input_tokens.observe(usage.prompt_tokens)
            if ctx.operation is not Operation.EMBEDDINGS:  # embeddings have no output tokens
                series.output_tokens.observe(usage.completion_tokens)
            if route.input_tokens is not None and route.output_tokens is not None:
                route.input_tokens.value += usage.prompt_tokens
                route.output_tokens.value += usage.completion_tokens

    def _bind(self, key: _RouteKey) -> _Route:
        """First request with this raw key: bound its labels, find or make its cells."""
        model_name, deployment_name, status, code, source, is_disconnected, project = key
        if source is None and is_disconnected:
            source, code = _DISCONNECT
        elif source is None and status == 0:
            source, code = _CRASHED
        model = self._model(model_name)
        deployment = self._deployment(deployment_name)
        labels: tuple[str, ...] = (
            model,
            deployment,
            status_class(status),
            str(source) if source is not None else NONE,
            self._code(code),
        )
        tokens = None
        if self._by_project:
            project_label = self._project(project)
            labels += (project_label,)
            token_key = (project_label, model)
            tokens = self._project_tokens.get(token_key)
            if tokens is None:
                tokens = self._project_tokens[token_key] = (_Count(), _Count())
        requests = self._requests.get(labels)
        if requests is None:
            requests = self._requests[labels] = _Count()
        series = self._series.get((model, deployment))
        if series is None:
            series = self._series[(model, deployment)] = _Series()
        route = _Route(requests, series, tokens)
        if len(self._routes) < _MAX_CACHED_ROUTES:
            self._routes[key] = route
        return route

    # -- scrape ----------------------------------------------------------------------
    def add_collector(self, collector: Collector) -> None:
        """Export another collector's metrics with these (admission, access log, ...)."""
        self.registry.register(collector)
        self._collectors.append(collector)

    def families(self) -> list[Family]:
        """Everything this worker exports: its own families, then the added collectors'."""
        families = self._own_families()
        for collector in self._collectors:
            families.extend(from_metrics(collector.collect()))
        return families

    def collect(self) -> Iterator[Metric]:
        """The ``prometheus_client`` view of this object's own families (registry use)."""
        return to_metrics(self._own_families())

    def _own_families(self) -> list[Family]:
        # Snapshots of the dicts: a threaded scrape may run while the loop adds a series.
        requests = Family(
            "lockgate_requests",
            COUNTER,
            "Requests settled, by model, deployment, HTTP status class, and error source "
            "and code ('none' when it succeeded).",
            (*_REQUEST_LABELS, "project") if self._by_project else _REQUEST_LABELS,
            series={labels: [count.value] for labels, count in tuple(self._requests.items())},
        )
        in_flight = Family(
            "lockgate_requests_in_flight",
            GAUGE,
            "Requests between arrival and settlement.",
            series={(): [self._in_flight]},
        )
        workers = Family(
            "lockgate_worker_processes",
            GAUGE,
            "Worker processes whose metrics this page includes (1 per live worker).",
            series={(): [1]},
        )
        families = [requests, in_flight, workers]
        series = tuple(self._series.items())
        for name, documentation, bounds, attribute in _HISTOGRAMS:
            rows: dict[tuple[str, ...], list[float]] = {}
            for labels, one in series:
                histogram: Histogram = getattr(one, attribute)
                if any(histogram.counts):
                    rows[labels] = histogram.row()
            families.append(
                Family(name, HISTOGRAM, documentation, _SERIES_LABELS, _les(bounds), rows)
            )
        tokens: dict[tuple[str, ...], list[float]] = {}
        for (model, deployment), one in series:
            for token_type, histogram in (
                ("input", one.input_tokens),
                ("output", one.output_tokens),
            ):
                if any(histogram.counts):
                    tokens[(model, deployment, token_type)] = histogram.row()
        families.append(
            Family(
                "gen_ai_client_token_usage",
                HISTOGRAM,
                "Tokens per request by type (OTel gen_ai.client.token.usage); _sum counts tokens.",
                (*_SERIES_LABELS, "gen_ai_token_type"),
                _les(TOKEN_BUCKETS),
                tokens,
            )
        )
        if self._by_project:
            project_tokens: dict[tuple[str, ...], list[float]] = {}
            for (project, model), (input_count, output_count) in tuple(
                self._project_tokens.items()
            ):
                project_tokens[(project, model, "input")] = [input_count.value]
                project_tokens[(project, model, "output")] = [output_count.value]
            families.append(
                Family(
                    "lockgate_project_tokens",
                    COUNTER,
                    "Tokens by project and model (tenant labels enabled).",
                    ("project", "model", "gen_ai_token_type"),
                    series=project_tokens,
                )
            )
        return families


# The exposition format's own spelling of bucket bounds (the library leaves it untyped).
_go_float: Callable[[float], str] = floatToGoString


@cache
def _les(bounds: Sequence[float]) -> tuple[str, ...]:
    return (*(_go_float(b) for b in bounds), "+Inf")


# (name, help, bucket bounds, attribute of _Series)
_HISTOGRAMS = (
    ("lockgate_request_duration_seconds",
     "Time from request arrival to the end of the response.", DURATION_BUCKETS_S, "duration"),
    ("lockgate_gateway_overhead_seconds",
     "Request time not spent waiting for the upstream (requests that reached one).",
     OVERHEAD_BUCKETS_S, "overhead"),
    ("lockgate_upstream_duration_seconds",
     "Time from sending the upstream request to the end of its response.",
     DURATION_BUCKETS_S, "upstream"),
    ("gen_ai_server_time_to_first_token_seconds",
     "Streams: time from sending upstream to the first event relayed (OTel "
     "gen_ai.server.time_to_first_token).", TTFT_BUCKETS_S, "ttft"),
    ("gen_ai_server_time_per_output_token_seconds",
     "Streams: decode time per output token after the first (OTel "
     "gen_ai.server.time_per_output_token).", TPOT_BUCKETS_S, "tpot"),
)  # fmt: skip
