"""Progressive rollout: a sticky percentage split between two versions, and its watchdog.

``Rollout`` is the live split of one versioned model in one worker: which
version is the candidate, what share of callers it gets, whether it was
rolled back, what share is shadowed. The config gives its first state; the
admin API changes it (persisted, announced on the invalidation bus, applied
here by ``lifecycle.ModelLifecycle``).

Stickiness: the caller's identity (session header, ``user``, API key — the
first present) is hashed with BLAKE2b, salted with the model name, into one
of 10,000 buckets; buckets below ``percent * 100`` go to the candidate. The
hash is the same in every process and replica, so a caller never flips
between versions, and raising the percentage only moves more buckets over.
A caller with no identity at all (anonymous, no session) is split per request.

``RollbackMonitor`` watches the candidate's answers over a sliding window and
says when its error rate or its share of slow answers crosses the threshold.
"""

from __future__ import annotations

import random
from collections import deque
from hashlib import blake2b
from typing import Any

from lockgate.routing.lifecycle_spec import RollbackSpec, RolloutSpec

BUCKETS = 10_000


def bucket(salt: bytes, key: bytes) -> int:
    """The caller's bucket in [0, BUCKETS): uniform, and the same in every process."""
    digest = blake2b(salt + key, digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


class Rollout:
    """One versioned model's live split (see the module docstring).

    ``threshold`` (buckets that go to the candidate) is 0 whenever nothing is
    split — no candidate, 0 %, or rolled back — so the hot path reads one integer.
    """

    __slots__ = (
        "candidate",
        "header",
        "is_rolled_back",
        "percent",
        "rollback",
        "rolled_back_reason",
        "salt",
        "shadow",
        "shadow_percent",
        "sticky",
        "threshold",
    )

    def __init__(self, model_name: str, spec: RolloutSpec | None) -> None:
        self.salt = model_name.encode() + b"\x00"
        self.candidate = spec.candidate if spec is not None else ""
        self.sticky = spec.sticky if spec is not None else ("header", "user", "key")
        self.header = (spec.header if spec is not None else "x-session-id").encode()
        self.rollback = spec.rollback if spec is not None else RollbackSpec()
        self.shadow = spec.shadow if spec is not None else None
        self.is_rolled_back = False
        self.rolled_back_reason = ""
        self.percent = 0.0
        self.shadow_percent = 0.0
        self.threshold = 0
        self.set(
            candidate=self.candidate,
            percent=spec.percent if spec is not None else 0.0,
            shadow_percent=self.shadow.percent if self.shadow is not None else 0.0,
            is_rolled_back=False,
        )

    def set(
        self,
        *,
        candidate: str,
        percent: float,
        shadow_percent: float,
        is_rolled_back: bool,
        reason: str = "",
    ) -> None:
        """The state an operator (or the config) gave; rolled back means 0 % candidate."""
        self.candidate = candidate
        self.percent = percent
        self.shadow_percent = shadow_percent
        self.is_rolled_back = is_rolled_back
        self.rolled_back_reason = reason if is_rolled_back else ""
        is_live = bool(candidate) and not is_rolled_back
        self.threshold = round(percent * BUCKETS / 100) if is_live else 0

    def roll_back(self, reason: str) -> None:
        """Stop sending the candidate traffic at once (this worker), until resumed."""
        self.set(
            candidate=self.candidate,
            percent=self.percent,
            shadow_percent=self.shadow_percent,
            is_rolled_back=True,
            reason=reason,
        )

    @property
    def is_shadowing(self) -> bool:
        return self.shadow_percent > 0 and bool(self.candidate) and not self.is_rolled_back

    def picks_candidate(
        self, headers: dict[bytes, bytes], body: dict[str, Any] | None, caller: str | None
    ) -> bool:
        """Whether this request goes to the candidate (only asked while ``threshold`` > 0)."""
        key: bytes | None = None
        for source in self.sticky:
            if source == "header":
                key = headers.get(self.header) or None
            elif source == "user":
                user = body.get("user") if body is not None else None
                key = user.encode() if isinstance(user, str) and user else None
            elif caller:
                key = caller.encode()
            if key is not None:
                return bucket(self.salt, key) < self.threshold
        return random.randrange(BUCKETS) < self.threshold  # noqa: S311 - a split, not a secret

    def picks_shadow(self) -> bool:
        return random.random() * 100 < self.shadow_percent  # noqa: S311


class RollbackMonitor:
    """The candidate's recent answers: errors and slow ones over a sliding time window.

    ``record`` is O(1) amortised (a deque trimmed from the left, two counters); it
    returns why the candidate should be rolled back, once the window holds at least
    ``min_samples`` answers and a ratio reaches its threshold, else None.
    """

    __slots__ = ("_errors", "_samples", "_slow", "spec")

    def __init__(self, spec: RollbackSpec) -> None:
        self.spec = spec
        self._samples: deque[tuple[float, bool, bool]] = deque()
        self._errors = 0
        self._slow = 0

    def reset(self) -> None:
        self._samples.clear()
        self._errors = self._slow = 0

    def record(self, now: float, is_error: bool, latency_s: float | None) -> str | None:
        spec = self.spec
        limit_ms = spec.max_latency_ms
        is_slow = limit_ms is not None and latency_s is not None and latency_s * 1000 > limit_ms
        samples = self._samples
        samples.append((now, is_error, is_slow))
        self._errors += is_error
        self._slow += is_slow
        horizon = now - spec.window_s
        while samples and samples[0][0] < horizon:
            _, old_error, old_slow = samples.popleft()
            self._errors -= old_error
            self._slow -= old_slow
        count = len(samples)
        if count < spec.min_samples:
            return None
        if self._errors / count >= spec.max_error_ratio:
            return (
                f"error rate {self._errors}/{count} over the last {spec.window_s:g}s "
                f"reached max_error_ratio {spec.max_error_ratio:g}"
            )
        if limit_ms is not None and self._slow / count >= spec.max_slow_ratio:
            return (
                f"{self._slow}/{count} answers slower than {limit_ms:g} ms over the last "
                f"{spec.window_s:g}s reached max_slow_ratio {spec.max_slow_ratio:g}"
            )
        return None
