"""The admit stage's implementation: caps, limits, then the saturation queue.

Order matters and is cheapest-first: the block list and per-tenant caps need
no state; the limits need one limiter decision (one Redis round trip in
scale-out, all limits together); only then does the request queue for a
saturated model's capacity. Whatever was reserved is settled exactly once by
the returned ticket, and a request refused at a later step gives back what
an earlier step reserved.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import ip_address, ip_network

from lockgate.admission import fair_queue
from lockgate.admission.budgets import ExhaustedBudget, ExhaustedBudgets, budget_for
from lockgate.admission.estimate import Estimate, actual_tokens, estimate, micro_cost
from lockgate.admission.fair_queue import CapacityGate, Slot
from lockgate.admission.feedback import (
    Blocked,
    OverCap,
    Overloaded,
    OverShare,
    rate_limit_headers,
    refusal,
    retry_headers,
)
from lockgate.admission.limiter import Limiter, LimitKind
from lockgate.admission.local import LocalLimiter
from lockgate.admission.policy import NO_TENANT, CompiledPolicy, TenantSettings, compile_policy
from lockgate.config import ModelEntry
from lockgate.config.spec import AdmissionSpec
from lockgate.dataplane.context import RequestContext
from lockgate.dataplane.pipeline.admit import NOTHING_RESERVED, Ticket

log = logging.getLogger(__name__)


@dataclass(slots=True)
class AdmissionStats:
    """Running counts for the metrics endpoint (observability reads them)."""

    admitted: int = 0
    degraded: int = 0  # decided locally because the shared limiter failed
    refused: Counter[tuple[str, str]] = field(default_factory=Counter)  # (scope, dimension)
    unavailable: int = 0
    blocked: int = 0
    over_cap: int = 0
    shed: Counter[str] = field(default_factory=Counter)  # queue_full, deadline, shed, over_share


_POLICY_CACHE_MAX = 50_000


class LimitAdmitter:
    def __init__(self, limiter: Limiter, config: AdmissionSpec) -> None:
        self._limiter = limiter
        # In process, decide and settle without a coroutine or a task per request.
        self._local = limiter if isinstance(limiter, LocalLimiter) else None
        self._config = config
        self._ietf = config.ietf_headers
        self._default_output = config.default_max_output_tokens
        block = config.block
        self._blocked_keys = frozenset(block.key_ids)
        self._blocked_projects = frozenset(block.project_ids)
        self._blocked_orgs = frozenset(block.organization_ids)
        self._blocked_networks = tuple(ip_network(c, strict=False) for c in block.cidrs)
        # (settings identity, model name) -> (settings, policy); settings kept alive so
        # the identity stays meaningful, and compared on hit.
        self._policies: dict[
            tuple[int, str], tuple[TenantSettings, ModelEntry, CompiledPolicy]
        ] = {}
        self._gates: dict[str, CapacityGate | None] = {}
        # Configured capacity and the engines' own queue, by model (``engines_report``).
        self._capacities: dict[str, int] = {}
        self._engine_waiting: dict[str, int] = {}
        self._settling: set[asyncio.Task[None]] = set()
        # Spent reject budgets by (scope, id), replaced whole by ``set_exhausted_budgets``.
        self._exhausted: ExhaustedBudgets = {}
        self.stats = AdmissionStats()

    def gate_stats(self) -> dict[str, fair_queue.GateStats]:
        """Per saturated model: queue and slot counters."""
        return {name: gate.stats for name, gate in self._gates.items() if gate is not None}

    def gates(self) -> dict[str, CapacityGate]:
        """The capacity gates in use, by model name (for the in-flight and queue gauges)."""
        return {name: gate for name, gate in self._gates.items() if gate is not None}

    def engines_report(self, model_name: str, waiting: float | None) -> None:
        """The model's engines report ``waiting`` requests queued (None: no fresh reading).

        An engine that queues is saturated whatever the gateway's own count says (other
        gateways, or a capacity set too high, fill it): the model's gate then admits that
        many fewer at once — never fewer than one, so traffic keeps moving and the next
        reading can tell — and requests wait in the gateway's fair queue instead of the
        engine's FIFO one. Called by the data plane after each scrape round (off the
        request path); a model with no capacity (no gate) is not affected.
        """
        queued = 0 if waiting is None else max(0, math.ceil(waiting))
        if self._engine_waiting.get(model_name, 0) == queued:
            return
        self._engine_waiting[model_name] = queued
        gate = self._gates.get(model_name)
        if gate is not None:
            gate.set_capacity(self._effective_capacity(model_name))

    def _effective_capacity(self, model_name: str) -> int:
        capacity = self._capacities[model_name]
        queued = self._engine_waiting.get(model_name, 0)
        return capacity if queued == 0 else max(1, capacity - queued)

    @property
    def limiter(self) -> Limiter:
        return self._limiter

    async def admit(self, ctx: RequestContext) -> Ticket:
        model = ctx.model
        assert model is not None
        settings = ctx.principal.admission or NO_TENANT
        policy = self._policy(settings, model)
        self._check_block(ctx, settings)
        self._check_caps(ctx, policy)
        if policy.budget is not None:
            self._check_budget(policy.budget)
        reservation = None
        if not policy.is_free:
            reservation = await self._acquire(ctx, policy)
        gate = self._gate(model)
        if gate is None:
            return reservation or NOTHING_RESERVED
        try:
            slot = await gate.acquire(
                policy.tenant,
                policy.priority,
                policy.weight,
                self._config.queue.max_wait_s,
            )
        except fair_queue.Overloaded as exc:
            self._give_back(reservation)
            self.stats.shed[exc.reason] += 1
            raise Overloaded(
                f"Model {model.name!r} is at capacity and its queue cannot take this request "
                f"({exc.reason.replace('_', ' ')}); retry later.",
                headers=retry_headers(exc.retry_after_s),
            ) from None
        except fair_queue.OverShare as exc:
            self._give_back(reservation)
            self.stats.shed["over_share"] += 1
            raise OverShare(
                f"Model {model.name!r} is at capacity and your project already has its share "
                "of the queue; retry later.",
                headers=retry_headers(exc.retry_after_s),
            ) from None
        except BaseException:
            self._give_back(reservation)
            raise
        if reservation is None:
            return _SlotOnly(slot)
        reservation.slot = slot
        return reservation

    async def close(self) -> None:
        if self._settling:
            await asyncio.gather(*self._settling, return_exceptions=True)
        await self._limiter.close()

    # -- steps -------------------------------------------------------------------------
    def _policy(self, settings: TenantSettings, model: ModelEntry) -> CompiledPolicy:
        cache_key = (id(settings), model.name)
        hit = self._policies.get(cache_key)
        if hit is not None and hit[0] is settings and hit[1] is model:
            return hit[2]
        policy = compile_policy(settings, model.name, model.limits, model.pricing, self._config)
        budget = budget_for(self._exhausted, settings.project_id, settings.organization_id)
        if budget is not None:
            policy = dataclasses.replace(policy, budget=budget)
        if len(self._policies) >= _POLICY_CACHE_MAX:
            self._policies.clear()  # settings churn; recompiling is cheap
        self._policies[cache_key] = (settings, model, policy)
        return policy

    def set_exhausted_budgets(self, exhausted: ExhaustedBudgets) -> None:
        """Which scopes' reject budgets are spent now (``metering/budgets_gate.py`` calls this
        whenever the set changes). Compiled policies are dropped, so the next request of
        every caller is judged against the new set."""
        if exhausted == self._exhausted:
            return
        self._exhausted = dict(exhausted)
        self._policies.clear()

    def _check_budget(self, budget: ExhaustedBudget) -> None:
        now = time.time()
        if now >= budget.ends_at:
            return  # the period ended; the next refresh drops it
        self.stats.refused[(budget.scope, budget.dimension)] += 1
        raise budget.refusal(now)

    def _check_block(self, ctx: RequestContext, settings: TenantSettings) -> None:
        if (
            settings.key_id in self._blocked_keys
            or settings.project_id in self._blocked_projects
            or settings.organization_id in self._blocked_orgs
        ):
            self.stats.blocked += 1
            raise Blocked("This credential is blocked from calling models; contact your admin.")
        if self._blocked_networks and ctx.client_ip:
            address = ip_address(ctx.client_ip)
            if any(address in network for network in self._blocked_networks):
                self.stats.blocked += 1
                raise Blocked("Requests from your network are blocked.")

    def _check_caps(self, ctx: RequestContext, policy: CompiledPolicy) -> None:
        cap = policy.max_request_bytes
        if cap is not None and len(ctx.http.body) > cap:
            self.stats.over_cap += 1
            raise OverCap(
                f"The request body is {len(ctx.http.body)} bytes; your limit is {cap} bytes."
            )
        cap = policy.max_tokens_per_request
        if cap is not None and ctx.body is not None:
            for name in ("max_completion_tokens", "max_tokens"):
                value = ctx.body.get(name)
                if isinstance(value, int) and value > cap:
                    self.stats.over_cap += 1
                    raise OverCap(f"'{name}' is {value}; your limit is {cap}.", param=name)

    async def _acquire(self, ctx: RequestContext, policy: CompiledPolicy) -> _Reservation:
        guess = (
            estimate(ctx.body, len(ctx.http.body), self._default_output)
            if policy.needs_tokens
            else _NO_TOKENS
        )
        costs = _costs(policy, guess)
        if self._local is not None:
            decision = self._local.decide(policy.limits, costs, ctx.request_id, trusted=True)
        else:
            decision = await self._limiter.acquire(policy.limits, costs, ctx.request_id)
        ctx.limit_headers = rate_limit_headers(decision.states, policy.labels, ietf=self._ietf)
        stats = self.stats
        if decision.degraded:
            stats.degraded += 1
        if not decision.admitted:
            if decision.unavailable:
                stats.unavailable += 1
            elif decision.denied_by is not None:
                label = policy.label_of(decision.denied_by)
                stats.refused[(label.scope, label.dimension)] += 1
            raise refusal(decision, policy)
        stats.admitted += 1
        return _Reservation(self, policy, guess, costs, ctx.request_id)

    def _gate(self, model: ModelEntry) -> CapacityGate | None:
        """The model's capacity gate; None (remembered) when it declares no capacity."""
        try:
            return self._gates[model.name]
        except KeyError:
            pass
        capacity = model.capacity
        gate = None
        if capacity is not None:
            queue = self._config.queue
            self._capacities[model.name] = capacity
            gate = CapacityGate(
                self._effective_capacity(model.name),
                max_queue=queue.max_queue,
                max_queue_per_tenant=queue.max_queue_per_tenant,
            )
        self._gates[model.name] = gate
        return gate

    def _give_back(self, reservation: _Reservation | None) -> None:
        if reservation is not None:
            self.settle(
                reservation.policy,
                reservation.costs,
                [0.0] * len(reservation.costs),
                reservation.lease_id,
            )

    def settle(
        self,
        policy: CompiledPolicy,
        reserved: Sequence[float],
        actual: Sequence[float],
        lease_id: str,
    ) -> None:
        """Reconcile in the background: the response must not wait for the limiter."""
        if self._local is not None:
            self._local.settle_now(policy.limits, reserved, actual, lease_id, trusted=True)
            return
        task = asyncio.get_running_loop().create_task(
            self._limiter.settle(policy.limits, reserved, actual, lease_id)
        )
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)


_NO_TOKENS = Estimate(0, 0)
_CachedPolicy = tuple[TenantSettings, ModelEntry, CompiledPolicy]


def _costs(policy: CompiledPolicy, guess: Estimate) -> list[float]:
    costs = []
    spend: float | None = None
    for limit in policy.limits:
        kind = limit.kind
        if kind is LimitKind.TOKENS:
            costs.append(float(guess.tokens))
        elif kind is LimitKind.SPEND:
            if spend is None:
                spend = micro_cost(policy.pricing, guess.prompt_tokens, guess.output_tokens)
            costs.append(spend)
        else:
            costs.append(1.0)
    return costs


@dataclass(slots=True)
class _Reservation:
    admitter: LimitAdmitter
    policy: CompiledPolicy
    reserved: Estimate
    costs: list[float]
    lease_id: str
    slot: Slot | None = None
    is_settled: bool = False

    def release(self, ctx: RequestContext) -> None:
        if self.is_settled:
            return
        self.is_settled = True
        if self.slot is not None:
            self.slot.release()
        used = actual_tokens(ctx.usage, ctx.upstream_sent_at is not None, self.reserved)
        # Request and concurrency costs come out as reserved (1): a request admitted
        # is spent, whatever happened next; tokens and spend follow real usage.
        actual = _costs(self.policy, used)
        self.admitter.settle(self.policy, self.costs, actual, self.lease_id)


@dataclass(slots=True)
class _SlotOnly:
    slot: Slot

    def release(self, ctx: RequestContext) -> None:
        self.slot.release()
