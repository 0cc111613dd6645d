"""Pools (one per model) and route plans (a model, then its fallbacks).

A ``Pool`` turns "which deployments may take this request" (health) and "which
of them" (the strategy) into a ``Lease``. A ``RoutePlan`` is the ordered list
of pools a request may try — its own model first, then the fallbacks — with
the retry budget of the model the client asked for. Both are built once at
start-up; choosing allocates nothing but the lease and one short list.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lockgate.config import DeploymentTarget, ModelEntry
from lockgate.routing.affinity import CacheAffinity, KeyReader
from lockgate.routing.member import Lease, Member
from lockgate.routing.retry import RetryBudget
from lockgate.routing.spec import FallbackSpec, RetryBudgetSpec
from lockgate.routing.strategies import (
    LatencyAware,
    LeastOutstanding,
    PowerOfTwo,
    Strategy,
    WeightedRandom,
)


def make_strategy(name: str, members: Sequence[Member], model: ModelEntry) -> Strategy:
    if name == "weighted_random":
        return WeightedRandom()
    if name == "power_of_two":
        return PowerOfTwo()
    if name == "latency":
        return LatencyAware()
    if name == "cache_affinity":
        return CacheAffinity(members, model.routing.affinity)
    return LeastOutstanding()


class Pool:
    """The live deployments of one model."""

    __slots__ = (
        "_by_path",
        "_read_key",
        "_throttled_until",
        "continuable",
        "members",
        "model",
        "needs_key",
        "on_breaker_open",
        "on_ejected",
        "on_throttled",
        "spec",
        "strategy",
    )

    def __init__(
        self,
        model: ModelEntry,
        members: Sequence[Member] | None = None,
        on_breaker_open: Callable[[Pool, Member], None] | None = None,
        on_ejected: Callable[[Pool, Member], None] | None = None,
        on_throttled: Callable[[Pool, Member], None] | None = None,
    ) -> None:
        self.model = model
        self.spec = model.routing
        self.members = (
            tuple(Member(d, self.spec) for d in model.deployments)
            if members is None
            else tuple(members)
        )
        # ``(pool, member)`` when a member's breaker opens or it is ejected on its own
        # failures, or an upstream's Retry-After throttles it (routing/health_sharing.py
        # sets them, to tell the other processes).
        self.on_breaker_open = on_breaker_open
        self.on_ejected = on_ejected
        self.on_throttled = on_throttled
        for member in self.members:
            member.on_breaker_open = self._breaker_opened
            member.on_ejected = self._ejected
        self.strategy = make_strategy(self.spec.strategy, self.members, model)
        self.needs_key = self.strategy.needs_key
        self._read_key = KeyReader(self.spec.affinity) if self.needs_key else None
        self._throttled_until = 0.0  # the latest Retry-After of any member
        # Some deployment can continue a broken stream (mid-stream failover).
        self.continuable = any(m.target.supports_continuation for m in self.members)
        paths = {p for m in self.members for p in m.target.passthrough}
        self._by_path = {
            p: tuple(m for m in self.members if p in m.target.passthrough) for p in paths
        }

    def replace_deployments(self, targets: Sequence[DeploymentTarget]) -> None:
        """Serve from ``targets`` from now on (deployments added or removed at runtime).

        A deployment whose target is unchanged keeps its member, so its load, latency
        and health survive; leases held on removed members end normally.
        """
        known = {m.target: m for m in self.members}
        members = [known.get(t) or Member(t, self.spec) for t in targets]
        throttled_until = self._throttled_until
        # Every derived index, from one place.
        Pool.__init__(
            self, self.model, members, self.on_breaker_open, self.on_ejected, self.on_throttled
        )
        self._throttled_until = throttled_until

    def _breaker_opened(self, member: Member) -> None:
        if self.on_breaker_open is not None:
            self.on_breaker_open(self, member)

    def _ejected(self, member: Member) -> None:
        if self.on_ejected is not None:
            self.on_ejected(self, member)

    def serves(self, path: str | None) -> bool:
        """Whether some deployment serves ``path`` (None: the standard inference routes)."""
        return path is None or path in self._by_path

    def key(self, headers: dict[bytes, bytes], body: dict[str, Any] | None) -> bytes | None:
        """The request's affinity key, read only if the strategy uses one."""
        return None if self._read_key is None else self._read_key(headers, body)

    def choose(
        self,
        now: float,
        key: bytes | None,
        *,
        path: str | None = None,
        tried: Sequence[Member] = (),
        allow_same: bool = False,
    ) -> Lease | None:
        """Lease a deployment for one attempt, or None if none may take it.

        Preference: deployments not yet tried by this request and not asking us
        to back off (Retry-After), then untried ones that are, then — only with
        ``allow_same`` — ones already tried. ``path``: a passthrough path the
        deployment must serve.
        """
        members = self.members if path is None else self._by_path.get(path, ())
        # Two attribute reads per healthy member; the full check only for the others.
        ready = [
            m for m in members if (not m.is_restricted and now >= m.blocked_until) or m.admits(now)
        ]
        if not ready:
            return None
        tier = ready
        if tried:
            tier = [m for m in ready if m not in tried]
            if not tier:
                if not allow_same:
                    return None
                tier = ready
        if now < self._throttled_until:  # someone said Retry-After: the others first
            calm = [m for m in tier if m.throttled_until <= now]
            if calm:
                tier = calm
        return self.strategy.pick(tier, key, now).lease()

    def throttle(
        self, member: Member, retry_after_s: float, now: float, *, is_own: bool = True
    ) -> None:
        """An upstream's Retry-After: the member is second choice until it has passed.
        ``is_own``: this process saw it (others are told), not another process."""
        member.throttle(retry_after_s, now)
        self._throttled_until = max(self._throttled_until, member.throttled_until)
        if is_own and self.on_throttled is not None:
            self.on_throttled(self, member)

    def back_at(self, now: float, path: str | None = None) -> float:
        """When the first deployment is expected back (all of them being out now)."""
        members = self.members if path is None else self._by_path.get(path, ())
        return min((m.available_at(now) for m in members), default=now)


@dataclass(frozen=True, slots=True)
class Step:
    pool: Pool
    fallback: FallbackSpec | None  # None: the model the client asked for


@dataclass(frozen=True, slots=True)
class RoutePlan:
    """Where a request for one model may go, in order, and what its retries may spend."""

    steps: tuple[Step, ...]
    budget: RetryBudget

    @property
    def pool(self) -> Pool:
        return self.steps[0].pool


def build_plans(models: Sequence[ModelEntry], budget: RetryBudgetSpec) -> dict[str, RoutePlan]:
    """One plan per model. Fallbacks are not followed transitively: a model's list is
    the whole chain, which rules out cycles and keeps the order what the operator wrote."""
    pools: dict[str, Pool] = {}
    for m in models:
        # A versioned model is served by one pool per version; as a fallback, and
        # wherever it is named plainly, it means its default version.
        for entry in m.versions or (m,):
            pools[entry.name] = Pool(entry)
        if m.versions:
            pools[m.name] = pools[f"{m.name}@{m.default_version}"]
    plans: dict[str, RoutePlan] = {}
    index: Mapping[str, ModelEntry] = {n: m for m in models for n in (m.name, *m.aliases)}
    for model in models:
        # A model listed twice (say once plainly, once for context overflow) is one
        # step whose conditions are the union: it is never tried twice.
        chosen: dict[str, FallbackSpec] = {}
        for fallback in model.fallbacks:
            target = index.get(fallback.model)
            if target is None or target.name == model.name:
                continue
            seen = chosen.get(target.name)
            if seen is not None:
                fallback = seen.model_copy(
                    update={
                        "on_failure": seen.on_failure or fallback.on_failure,
                        "on_context_overflow": seen.on_context_overflow
                        or fallback.on_context_overflow,
                    }
                )
            chosen[target.name] = fallback
        # One budget per requested model, whichever of its versions serves.
        model_budget = RetryBudget(budget)
        for entry in model.versions or (model,):
            steps = [Step(pools[entry.name], None)]
            steps.extend(Step(pools[name], fallback) for name, fallback in chosen.items())
            plans[entry.name] = RoutePlan(tuple(steps), model_budget)
    return plans
