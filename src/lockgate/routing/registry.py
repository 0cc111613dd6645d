"""Deployments added at runtime: what they become, and when the next one lapses.

The admin API and engine registration store rows (``store.repositories.deployments``);
every worker turns the live rows into ``DeploymentTarget``s here and hands each
pool its configured deployments plus these (``Pool.replace_deployments``).
Pure functions only: the I/O is the lifecycle's (``dataplane.lifecycle``).

A runtime deployment gets the model's timeouts and routing like a configured
one, but carries no upstream credential and forwards no client headers: an
engine inside the trust boundary registers itself, and nothing a client or
an engine says may make the gateway send a secret somewhere new.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from ipaddress import ip_address, ip_network
from typing import Protocol
from urllib.parse import urlsplit

from lockgate.config import DeploymentTarget, ModelEntry


class RuntimeRow(Protocol):
    """The fields of a stored runtime deployment this module reads."""

    @property
    def model(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def base_url(self) -> str: ...
    @property
    def upstream_model(self) -> str | None: ...
    @property
    def capacity(self) -> int | None: ...
    @property
    def weight(self) -> float: ...
    @property
    def expires_at(self) -> datetime | None: ...


def serving_entries(models: Iterable[ModelEntry]) -> dict[str, ModelEntry]:
    """Every entry that has a pool, by name: unversioned models and each name@version."""
    return {entry.name: entry for model in models for entry in (model.versions or (model,))}


def runtime_target(entry: ModelEntry, row: RuntimeRow) -> DeploymentTarget:
    """The target a stored row describes, for ``entry`` (the row's model)."""
    url = urlsplit(row.base_url)
    return DeploymentTarget(
        name=row.name,
        model_name=entry.name,
        scheme=url.scheme,
        host=url.hostname or "",
        port=url.port or (443 if url.scheme == "https" else 80),
        base_path=url.path or "",
        upstream_model=row.upstream_model or entry.name.partition("@")[0],
        authorization=None,
        timeouts=entry.timeouts,
        passthrough=frozenset(),
        forward_headers=frozenset(),
        forward_header_prefixes=(),
        capacity=row.capacity,
        weight=row.weight,
    )


def targets_by_entry(
    entries: Mapping[str, ModelEntry], rows: Iterable[RuntimeRow]
) -> dict[str, tuple[DeploymentTarget, ...]]:
    """Each entry's full deployment list: configured ones first, then runtime ones.

    A runtime row naming a configured deployment, or a model not configured here
    (another replica's newer config), is skipped: configuration wins.
    """
    result = {name: entry.deployments for name, entry in entries.items()}
    for row in rows:
        entry = entries.get(row.model)
        if entry is None or any(d.name == row.name for d in entry.deployments):
            continue
        result[row.model] = (*result[row.model], runtime_target(entry, row))
    return result


def next_expiry(rows: Iterable[RuntimeRow]) -> datetime | None:
    """When the first registration lapses unless renewed (None: none can)."""
    return min((r.expires_at for r in rows if r.expires_at is not None), default=None)


def check_base_url(base_url: str, allowed_networks: Sequence[str]) -> str | None:
    """Why ``base_url`` may not be registered, or None. With ``allowed_networks`` the
    host must be a literal address inside one (a name could resolve anywhere)."""
    if not allowed_networks:
        return None
    host = urlsplit(base_url).hostname or ""
    try:
        address = ip_address(host)
    except ValueError:
        return "must name an IP address (routing.registration.allowed_networks is set)"
    if not any(address in ip_network(n, strict=False) for n in allowed_networks):
        return "is outside routing.registration.allowed_networks"
    return None
