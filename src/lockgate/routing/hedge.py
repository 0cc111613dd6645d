"""Hedged requests: when to send a second copy of a slow non-streamed request.

A request stuck behind a slow replica (a long batch, a GC pause, a bad GPU) is
answered sooner by a copy sent elsewhere than by waiting; sending the copy only
once the first attempt is slower than, say, 95 % of recent requests costs about
5 % extra load (Dean and Barroso, "The Tail at Scale"). The delay is either fixed
(``after_ms``) or that percentile of the model's recent non-streamed latencies
(``after_percentile``), the fixed one standing in until ``min_samples`` are known.

Only non-streamed requests are hedged: a stream's first byte goes to the client
at once, after which a second copy could not be used anyway.
"""

from __future__ import annotations

from lockgate.routing.spec import HedgeSpec

# Latencies kept per model: enough for a stable p95/p99, small enough to sort quickly.
_WINDOW = 256
# The percentile is recomputed after this many new samples (sorting on every request
# would cost more than the rest of routing).
_RECOMPUTE_EVERY = 16


class LatencyWindow:
    """The last ``_WINDOW`` latencies of one model, and a cached percentile of them."""

    __slots__ = ("_cached", "_count", "_fresh", "_next", "_percentile", "_samples")

    def __init__(self, percentile: float) -> None:
        self._percentile = percentile
        self._samples = [0.0] * _WINDOW
        self._next = 0
        self._count = 0
        self._fresh = 0  # samples since the cached value was computed
        self._cached: float | None = None

    def __len__(self) -> int:
        return self._count

    def add(self, seconds: float) -> None:
        self._samples[self._next] = seconds
        self._next = (self._next + 1) % _WINDOW
        if self._count < _WINDOW:
            self._count += 1
        self._fresh += 1

    def value(self) -> float | None:
        """The percentile of the window (nearest rank), None while it is empty."""
        if self._count == 0:
            return None
        if self._cached is None or self._fresh >= _RECOMPUTE_EVERY:
            ordered = sorted(self._samples[: self._count])
            rank = max(0, min(self._count - 1, round(self._percentile / 100 * self._count) - 1))
            self._cached = ordered[rank]
            self._fresh = 0
        return self._cached


class HedgePolicy:
    """One model's hedging rule: the delay before each extra attempt, learned latencies."""

    __slots__ = ("_after_s", "_min_samples", "latencies", "max_extra")

    def __init__(self, spec: HedgeSpec) -> None:
        self._after_s = None if spec.after_ms is None else spec.after_ms / 1000.0
        self._min_samples = spec.min_samples
        self.max_extra = spec.max_extra
        self.latencies = (
            None if spec.after_percentile is None else LatencyWindow(spec.after_percentile)
        )

    def delay_s(self) -> float | None:
        """How long the first attempt may take before a copy is sent; None: do not hedge
        (a percentile with too few samples and no fixed delay to stand in)."""
        window = self.latencies
        if window is not None and len(window) >= self._min_samples:
            return window.value()
        return self._after_s

    def record(self, latency_s: float) -> None:
        """A non-streamed attempt answered after ``latency_s`` (successes only)."""
        if self.latencies is not None:
            self.latencies.add(latency_s)
