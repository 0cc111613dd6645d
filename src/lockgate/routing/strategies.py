"""Balancing strategies: given the deployments that may take a request, pick one.

Every strategy gets a non-empty sequence of candidates that health has already
filtered, and must be cheap (a few attribute reads per candidate): it runs on
every request. Randomness is the ``random`` module's (fast, not secret).

* ``weighted_random`` — proportional to ``weight``; stateless, fine for many workers.
* ``least_outstanding`` — fewest requests in flight (ties at random): steers
  away from a slow replica as soon as requests pile up on it. The default.
  With ``engine_metrics``, the engine-reported pressure instead (``engine_load``).
* ``power_of_two`` — two random candidates, the lower load score
  (outstanding / capacity) wins: capacity-aware and without the herd effect
  of always picking the global minimum.
* ``latency`` — power of two choices on TTFT moving average * (outstanding + 1).
* ``cache_affinity`` — see ``affinity.py``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Protocol

from lockgate.routing.member import Member

# An unmeasured deployment is assumed as fast as this when nothing else is known, so
# it gets traffic (and a measurement) but not all of it.
_UNKNOWN_LATENCY_S = 0.001


class Strategy(Protocol):
    # Whether ``pick`` uses the request's affinity key (only then is it extracted).
    needs_key: bool

    def pick(self, candidates: Sequence[Member], key: bytes | None, now: float) -> Member:
        """One of ``candidates`` (never empty)."""
        ...


class WeightedRandom:
    needs_key = False

    def pick(self, candidates: Sequence[Member], key: bytes | None, now: float) -> Member:
        if len(candidates) == 1:
            return candidates[0]
        total = 0.0
        for member in candidates:
            total += member.weight
        point = random.random() * total  # noqa: S311 - balancing, not secrecy
        for member in candidates:
            point -= member.weight
            if point < 0:
                return member
        return candidates[-1]  # float rounding at the very top of the range


class LeastOutstanding:
    """Fewest requests in flight; with engine metrics, the lowest ``Member.pressure``
    (the engine's running and queued requests, everyone's, and its KV-cache use)."""

    needs_key = False

    def pick(self, candidates: Sequence[Member], key: bytes | None, now: float) -> Member:
        best = candidates[0]
        fewest = best.outstanding if best.engine is None else best.pressure()
        ties = 1
        for member in candidates[1:]:
            outstanding = member.outstanding if member.engine is None else member.pressure()
            if outstanding < fewest:
                best, fewest, ties = member, outstanding, 1
            elif outstanding == fewest:
                # At random among equals (reservoir sampling: each tie kept with 1/n), as
                # always the first would pile idle-time traffic on one replica.
                ties += 1
                if random.random() * ties < 1:  # noqa: S311
                    best = member
        return best


def _two(candidates: Sequence[Member]) -> tuple[Member, Member]:
    """Two distinct candidates at random (len ≥ 2), in random order."""
    count = len(candidates)
    first = random.randrange(count)  # noqa: S311
    second = random.randrange(count - 1)  # noqa: S311
    if second >= first:
        second += 1
    return candidates[first], candidates[second]


class PowerOfTwo:
    needs_key = False

    def pick(self, candidates: Sequence[Member], key: bytes | None, now: float) -> Member:
        if len(candidates) == 1:
            return candidates[0]
        a, b = _two(candidates)
        return b if b.load() < a.load() else a


class LatencyAware:
    needs_key = False

    def pick(self, candidates: Sequence[Member], key: bytes | None, now: float) -> Member:
        if len(candidates) == 1:
            return candidates[0]
        a, b = _two(candidates)
        latency_a = a.latency_s(now)
        latency_b = b.latency_s(now)
        if latency_a is None or latency_b is None:
            # Unknown is priced at half the best known one, so an idle unmeasured
            # replica is tried next; once one request is in flight there it costs the
            # same as the best known one, so it is explored without a stampede.
            known = [x for x in (latency_a, latency_b) if x is not None]
            guess = min(known) / 2 if known else _UNKNOWN_LATENCY_S
            latency_a = guess if latency_a is None else latency_a
            latency_b = guess if latency_b is None else latency_b
        score_a = latency_a * (a.outstanding + 1)
        score_b = latency_b * (b.outstanding + 1)
        return b if score_b < score_a else a
