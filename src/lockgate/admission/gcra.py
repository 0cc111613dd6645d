"""GCRA, the generic cell rate algorithm, with variable cost: the arithmetic of every rate limit.

Why GCRA rather than fixed windows: a fixed window ("60 per minute, counter
reset at :00") admits twice the limit across a window boundary, makes every
throttled client retry at the same instant when the window resets, and keeps
one counter per window. A sliding log is exact but stores every request.
GCRA refills continuously, stores ONE number per counter (the theoretical
arrival time, TAT), answers "how many now" and "when again" exactly, takes
a variable cost (tokens, micro-units of spend) as naturally as a cost of 1,
and needs no background task: a counter whose TAT has passed is a full one,
so it can expire or be dropped.

The model: each unit "occupies" ``T = period_s / limit`` seconds (the emission
interval). TAT is when the counter would be empty again at that rate. A cost
``n`` is admitted when ``max(TAT, now) + n*T - now <= burst*T``: up to
``burst`` units of tolerance, refilled one unit per ``T``. Admission moves TAT
to ``max(TAT, now) + n*T``.

Oversize costs (``n > burst``, e.g. a request whose token estimate exceeds the
whole tokens-per-minute burst) would never fit under that rule and would be
refused forever. Instead such a cost is admitted only when the counter is
FULL (``TAT <= now``) and is charged in full, leaving the counter in debt
(``TAT - now > burst*T``) until the rate has paid it back; everything else on
that counter waits meanwhile. So a huge request is neither starved nor a way
round the limit: over any long window the rate holds, and the excess is at
most one request. Its ``wait_s`` when refused is the time until the counter
is full. Formally, the check uses ``min(n, burst)`` and the charge uses ``n``.

``settle`` corrects a reservation with the actual usage: TAT moves by
``(actual - reserved) * T``, from ``max(TAT, now)`` so a debt is never
absorbed by time already refilled, and never below ``now`` so a refund never
credits more than a full counter.

Times are floats in seconds on whatever clock the caller uses (monotonic in
one process, Redis server time shifted to a recent epoch across replicas).
Comparisons allow ``EPSILON_S`` (1 µs, the resolution of Redis ``TIME``) so the
rounding of a long run of additions never refuses a cost that exactly fits;
reported figures are rounded to 1e-6 so ``59.9999999`` is reported as ``60``.
``redis_limiter.py`` carries the same check and charge in Lua; keep them in step.
"""

from __future__ import annotations

from typing import NamedTuple

EPSILON_S = 1e-6
_RESOLUTION = 1e6  # reported figures are rounded to 1e-6


class Verdict(NamedTuple):
    """One counter's answer to one cost: ``tat`` is the new TAT when admitted (charged),
    else the current one; ``wait_s`` is how long until the same cost would fit (0 if admitted).
    A named tuple: it is built for every limit of every decision, and is cheaper so."""

    is_admitted: bool
    tat: float
    wait_s: float


def check(tat: float | None, now: float, cost: float, interval_s: float, burst: float) -> Verdict:
    """Whether ``cost`` fits a counter at ``tat`` (None: never used, i.e. full) at ``now``.

    Pure: the caller stores ``verdict.tat`` only if it commits the charge
    (all-or-nothing across limits is the caller's business).
    """
    level = now if tat is None or tat < now else tat
    wait_s = level + (min(cost, burst) - burst) * interval_s - now
    if wait_s <= EPSILON_S:
        return Verdict(True, level + cost * interval_s, 0.0)
    return Verdict(False, level, _rounded(wait_s))


def settle(tat: float | None, now: float, delta: float, interval_s: float) -> float:
    """The TAT after charging ``delta`` more units (negative: a refund) than were reserved.

    A result ``<= now`` is a full counter, which the caller may drop.
    """
    level = now if tat is None or tat < now else tat
    return max(now, level + delta * interval_s)


def state(tat: float | None, now: float, interval_s: float, burst: float) -> tuple[float, float]:
    """``(remaining, reset_s)`` of a counter: units admissible now (never negative, even in
    debt), and seconds until it is full again (0 if it is)."""
    return state_from_reset(0.0 if tat is None else tat - now, interval_s, burst)


def state_from_reset(reset_s: float, interval_s: float, burst: float) -> tuple[float, float]:
    """``state`` from ``TAT - now`` alone, which is what the Redis script reports."""
    reset_s = max(0.0, reset_s)
    remaining = max(0.0, burst - reset_s / interval_s)
    return _rounded(remaining), _rounded(reset_s)


def _rounded(value: float) -> float:
    """``value`` (>= 0) to the nearest 1e-6; ``round(value, 6)`` costs several times more."""
    return int(value * _RESOLUTION + 0.5) / _RESOLUTION
