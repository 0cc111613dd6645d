"""Which version of a versioned model serves a request.

``VersionedModel`` is built once per versioned model by the router: the route
plan of every version, the names that pin one (``name@v2``, ``alias@v2``), and
the live ``Rollout``. ``choose`` is the whole per-request decision:

1. pinned by name → that version (retired ones were refused when the name was resolved);
2. else the rollout's sticky split → the candidate for its share of callers;
3. else the default version — and, for the shadowed share, the candidate's plan to
   receive a copy in the background.

Unversioned models never get here (the router finds their plan in one dict lookup).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from lockgate.routing.pool import RoutePlan
from lockgate.routing.rollout import RollbackMonitor, Rollout
from lockgate.routing.versions import pinned_names

if TYPE_CHECKING:
    from lockgate.config import ModelEntry


class VersionedModel:
    __slots__ = ("by_version", "default", "monitor", "pinned", "public", "rollout")

    def __init__(self, public: ModelEntry, plans: Mapping[str, RoutePlan]) -> None:
        self.public = public
        self.by_version = {v.version: plans[v.name] for v in public.versions}
        self.default = self.by_version[public.default_version]
        self.pinned = {name: plans[v.name] for name, v in pinned_names(public).items()}
        self.rollout = Rollout(public.name, public.rollout)
        self.monitor = RollbackMonitor(self.rollout.rollback)

    def version(self, name: str) -> ModelEntry | None:
        plan = self.by_version.get(name)
        return None if plan is None else plan.pool.model

    def choose(
        self,
        requested: str,
        headers: dict[bytes, bytes],
        body: dict[str, Any] | None,
        caller: str | None,
    ) -> tuple[RoutePlan, RoutePlan | None]:
        """The plan to serve from, and the candidate's plan if this request is shadowed.

        ``caller``: the stable identity of the credential (None for anonymous callers).
        """
        pinned = self.pinned.get(requested)
        if pinned is not None:
            return pinned, None
        rollout = self.rollout
        if rollout.threshold and rollout.picks_candidate(headers, body, caller):
            candidate = self.by_version.get(rollout.candidate)
            if candidate is not None:
                return candidate, None
        if rollout.shadow_percent and rollout.is_shadowing and rollout.picks_shadow():
            return self.default, self.by_version.get(rollout.candidate)
        return self.default, None

    def is_candidate(self, version: str) -> bool:
        """Whether answers of ``version`` feed the rollback monitor right now."""
        rollout = self.rollout
        return version == rollout.candidate and not rollout.is_rolled_back
