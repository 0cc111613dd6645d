"""Label values with a bounded number of distinct values.

Every distinct label value is a new time series held in memory by each worker
and by Prometheus, forever. Some of ours come from outside: error codes of
``UpstreamHttpError`` are whatever the upstream's body said, and project ids
grow with tenants. Each label therefore goes through a ``BoundedLabel``: a
known set of values (or the first ``cap`` distinct ones) pass, everything
else becomes ``"other"``, so a misbehaving upstream or a tenant explosion
cannot blow up the scrape.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

OTHER = "other"
NONE = "none"  # the request never got that far (no model, no deployment, no error)

# Label values we accept verbatim: what error codes and identifiers look like.
# Anything else (spaces, quotes, very long) is not worth a series of its own.
_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@-]{0,127}", re.ASCII)

# HTTP status -> class label; index is the status. 0 means no status was set
# (the client left before an answer was decided).
STATUS_CLASSES: tuple[str, ...] = tuple(
    NONE if status < 100 else f"{status // 100}xx" for status in range(600)
)


def status_class(status: int) -> str:
    return STATUS_CLASSES[status] if 0 <= status < 600 else OTHER


class BoundedLabel:
    """Maps raw values to at most ``cap`` distinct label values plus ``"other"``.

    With ``allowed``, only those values pass (the configured model names, say);
    without, the first ``cap`` distinct well-formed values do, in arrival order.
    ``None`` maps to ``"none"``. Not on the hot path: callers cache the result
    per raw value (see ``GatewayMetrics``).
    """

    __slots__ = ("_allowed", "_cap", "_seen")

    def __init__(self, cap: int, allowed: Iterable[str] = ()) -> None:
        if cap < 0:
            raise ValueError("cap must be >= 0")
        self._cap = cap
        self._allowed = frozenset(allowed) or None
        self._seen: set[str] = set()

    def __call__(self, raw: str | None) -> str:
        if raw is None or raw == "":
            return NONE
        if raw in self._seen:
            return raw
        if self._allowed is not None:
            return raw if raw in self._allowed else OTHER
        if len(self._seen) >= self._cap or _PLAIN.fullmatch(raw) is None:
            return OTHER
        self._seen.add(raw)
        return raw
