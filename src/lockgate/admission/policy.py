"""Which limits apply to a request, compiled once per (caller settings, model).

A request must pass every limit of every scope that applies: its key, its
project, its organisation (which therefore caps the sum of its projects),
the (project, model) pair, and the model as a whole. Each record's
``LimitSpec`` is laid field by field over the configured default for its
scope, then turned into limiter ``Limit`` objects with stable counter keys,
so all replicas count against the same counters.

Compiling is pure and cached by the admitter: the hot path reuses the tuple
until the caller's cached grant (and with it its settings) is replaced.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING

from lockgate.admission.fair_queue import Priority
from lockgate.admission.limiter import Limit, LimitKind, check_call
from lockgate.admission.spec import NO_LIMITS, LimitSpec
from lockgate.config.spec import AdmissionSpec, Pricing

if TYPE_CHECKING:  # admission.budgets imports feedback, which imports this module
    from lockgate.admission.budgets import ExhaustedBudget

MICRO = Decimal(1_000_000)
_DAY = 86_400.0
_MONTH = 30 * _DAY
_PRIORITIES = {
    "interactive": Priority.INTERACTIVE,
    "standard": Priority.STANDARD,
    "batch": Priority.BATCH,
}


@dataclass(frozen=True, slots=True)
class TenantSettings:
    """A caller's admission settings, attached to its ``Principal`` by authenticate.

    Replaced (never mutated) whenever the key, project or organisation changes,
    which is what lets the admitter cache compiled policies by identity.
    """

    key_id: str | None = None
    project_id: str | None = None
    organization_id: str | None = None
    key: LimitSpec = NO_LIMITS
    project: LimitSpec = NO_LIMITS
    organization: LimitSpec = NO_LIMITS
    project_models: Mapping[str, LimitSpec] = field(default_factory=dict)

    @property
    def tenant(self) -> str:
        """The unit of fairness between tenants: the project (else key, else anyone)."""
        return self.project_id or self.key_id or "-"


NO_TENANT = TenantSettings()


@dataclass(frozen=True, slots=True)
class LimitLabel:
    """What a limit is, in words a caller can act on (no other tenant's details)."""

    scope: str  # key, project, organization, project_model, model
    dimension: str  # a LimitSpec field name, e.g. requests_per_minute

    def describe(self, limit: Limit) -> str:
        where = "model" if self.scope == "model" else f"{self.scope.replace('_', ' ')}"
        amount = _amount(limit, self.dimension)
        return f"{where} {self.dimension.replace('_', ' ')} limit ({amount})"


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    limits: tuple[Limit, ...]
    labels: tuple[LimitLabel, ...]  # parallel to ``limits``
    # Largest max_tokens / body size any scope allows (None: uncapped).
    max_tokens_per_request: int | None
    max_request_bytes: int | None
    priority: Priority
    weight: float
    tenant: str
    needs_tokens: bool  # some limit counts tokens or spend: estimate them
    pricing: Pricing | None
    # A spent ``reject`` budget of the caller's project or organisation: refuse (set by
    # the admitter from what the budget evaluator measured; see admission/budgets.py).
    budget: ExhaustedBudget | None = None

    def label_of(self, limit: Limit) -> LimitLabel:
        """The words for one of this policy's limits (a limiter hands back the same one)."""
        return self.labels[self.limits.index(limit)]

    @property
    def is_free(self) -> bool:
        """Nothing to check or charge: the admitter may skip the limiter entirely."""
        return not self.limits


def merged(default: LimitSpec, own: LimitSpec) -> LimitSpec:
    """``own``'s fields over ``default``'s: a record overrides its scope's default per field."""
    if default is NO_LIMITS:
        return own
    if own is NO_LIMITS:
        return default
    return default.model_copy(update=own.model_dump(exclude_none=True))


def compile_policy(
    settings: TenantSettings,
    model_name: str,
    model_limits: LimitSpec,
    pricing: Pricing | None,
    config: AdmissionSpec,
) -> CompiledPolicy:
    defaults = config.defaults
    fail_open_default = config.on_backend_failure == "open"
    scoped: list[tuple[str, str, LimitSpec]] = [("model", model_name, model_limits)]
    if settings.organization_id is not None:
        org = merged(defaults.organization, settings.organization)
        scoped.append(("organization", settings.organization_id, org))
    if settings.project_id is not None:
        project = merged(defaults.project, settings.project)
        scoped.append(("project", settings.project_id, project))
        pair = settings.project_models.get(model_name)
        if pair is not None:
            scoped.append(("project_model", f"{settings.project_id}:{model_name}", pair))
    if settings.key_id is not None:
        scoped.append(("key", settings.key_id, merged(defaults.key, settings.key)))

    limits: list[Limit] = []
    labels: list[LimitLabel] = []
    for scope, ident, spec in scoped:
        fail_open = (
            fail_open_default
            if spec.on_backend_failure is None
            else spec.on_backend_failure == "open"
        )
        for dimension, limit in _limits_of(spec, f"{scope}:{ident}", fail_open):
            limits.append(limit)
            labels.append(LimitLabel(scope, dimension))
    check_call(limits)  # distinct keys: the limiter may then trust these limits
    # The most specific scope decides scheduling; caps take the tightest of all.
    specs = [spec for _, _, spec in scoped]
    priority_name = next((s.priority for s in reversed(specs) if s.priority), "standard")
    weight = next((s.weight for s in reversed(specs) if s.weight), 1.0)
    return CompiledPolicy(
        limits=tuple(limits),
        labels=tuple(labels),
        max_tokens_per_request=_tightest(s.max_tokens_per_request for s in specs),
        max_request_bytes=_tightest(s.max_request_bytes for s in specs),
        priority=_PRIORITIES[priority_name],
        weight=weight,
        tenant=settings.tenant,
        needs_tokens=any(limit.kind in (LimitKind.TOKENS, LimitKind.SPEND) for limit in limits),
        pricing=pricing,
    )


def _limits_of(spec: LimitSpec, prefix: str, fail_open: bool) -> list[tuple[str, Limit]]:
    found: list[tuple[str, Limit]] = []

    def add(dimension: str, kind: LimitKind, amount: float, period: float, burst: float) -> None:
        # The figures are part of the counter's name: a GCRA counter's state only means
        # something at its own rate, so a changed limit starts a fresh counter.
        key = f"{prefix}:{dimension}:{amount:g}/{burst:g}"
        limit = Limit(key, kind, amount, period, burst, fail_open)
        found.append((dimension, limit))

    if spec.requests_per_second:
        rate = spec.requests_per_second
        add("requests_per_second", LimitKind.REQUESTS, rate, 1.0, spec.burst or rate)
    if spec.requests_per_minute:
        rate = spec.requests_per_minute
        add("requests_per_minute", LimitKind.REQUESTS, rate, 60.0, spec.burst or rate)
    if spec.requests_per_day:
        rate = spec.requests_per_day
        add("requests_per_day", LimitKind.REQUESTS, rate, _DAY, spec.burst or rate)
    if spec.tokens_per_minute:
        tpm = spec.tokens_per_minute
        add("tokens_per_minute", LimitKind.TOKENS, tpm, 60.0, tpm)
    if spec.tokens_per_day:
        tpd = spec.tokens_per_day
        add("tokens_per_day", LimitKind.TOKENS, tpd, _DAY, tpd)
    if spec.concurrent_requests:
        most = spec.concurrent_requests
        add("concurrent_requests", LimitKind.CONCURRENCY, most, 0.0, most)
    if spec.spend_per_day:
        micro = float(spec.spend_per_day * MICRO)
        add("spend_per_day", LimitKind.SPEND, micro, _DAY, micro)
    if spec.spend_per_month:
        micro = float(spec.spend_per_month * MICRO)
        add("spend_per_month", LimitKind.SPEND, micro, _MONTH, micro)
    return found


def _tightest(values: Iterable[int | None]) -> int | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def _amount(limit: Limit, dimension: str) -> str:
    if limit.kind is LimitKind.SPEND:
        return f"{Decimal(limit.limit) / MICRO:f} per {_period_word(limit.period_s)}"
    if limit.kind is LimitKind.CONCURRENCY:
        return f"{limit.limit:g} at once"
    return f"{limit.limit:g} per {_period_word(limit.period_s)}"


def _period_word(period_s: float) -> str:
    return {1.0: "second", 60.0: "minute", _DAY: "day", _MONTH: "30 days"}.get(
        period_s, f"{period_s:g} s"
    )
