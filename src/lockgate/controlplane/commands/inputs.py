"""What an operator types, turned into the values the store and actions take.

Organisations and projects may be named by id or by name (operators remember
names; scripts keep ids). Durations are ``30d``, ``12h``, ``1h30m``. Every
problem is a ``UsageError`` naming the option, so the command exits 2 with
one line instead of a traceback or, worse, a stored value the data plane
cannot use (an invalid CIDR would fail every request made with the key).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from ipaddress import ip_network
from typing import Protocol, TypeVar

from pydantic import ValidationError

from lockgate.admission.spec import LimitSpec
from lockgate.controlplane.commands.errors import UsageError
from lockgate.store.errors import NotFound
from lockgate.store.repositories.base import MAX_PAGE_SIZE
from lockgate.store.store import Store
from lockgate.tenancy.keys import KEY_PREFIX, is_key_id
from lockgate.tenancy.model import Organization, Project

_DURATION = re.compile(r"(\d+)([smhdw])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_GRACE = timedelta(days=30)  # as the admin API allows


class _Record(Protocol):
    @property
    def id(self) -> str: ...


_R = TypeVar("_R", bound=_Record)


def parse_duration(text: str, option: str, *, allow_zero: bool = False) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w`` or combinations (``1d12h``)."""
    compact = text.strip().lower()
    parts = _DURATION.findall(compact)
    if not parts or "".join(n + u for n, u in parts) != compact:
        raise UsageError(f"{option} {text!r}: use a number and a unit, e.g. 30d, 12h, 90m, 45s")
    value = timedelta(seconds=sum(int(n) * _UNIT_S[u] for n, u in parts))
    if value <= timedelta(0) and not (allow_zero and value == timedelta(0)):
        raise UsageError(f"{option} {text!r}: must be longer than zero")
    return value


def parse_grace(text: str) -> timedelta:
    grace = parse_duration(text, "--grace", allow_zero=True)
    if grace > MAX_GRACE:
        raise UsageError(f"--grace {text!r}: at most {MAX_GRACE.days}d")
    return grace


def parse_cidrs(values: Sequence[str]) -> list[str]:
    """Each value as the canonical network it names (host bits allowed, as the data plane)."""
    networks = []
    for value in values:
        try:
            networks.append(str(ip_network(value, strict=False)))
        except ValueError:
            raise UsageError(f"--allow-cidr {value!r}: not an IP network") from None
    return networks


def parse_tags(values: Sequence[str]) -> dict[str, str]:
    """``--require-tag key=value`` options as the tags a model must carry."""
    tags: dict[str, str] = {}
    for value in values:
        name, sep, tag = value.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--require-tag {value!r}: use key=value, e.g. classification=public")
        tags[name.strip()] = tag.strip()
    return tags


def parse_limits(values: Sequence[str]) -> LimitSpec:
    """``--limit name=value`` options as one ``LimitSpec`` (names as in the config file)."""
    raw: dict[str, str] = {}
    for value in values:
        name, sep, amount = value.partition("=")
        if not sep or not name.strip() or not amount.strip():
            raise UsageError(f"--limit {value!r}: use name=value, e.g. requests_per_minute=600")
        raw[name.strip()] = amount.strip()
    try:
        return LimitSpec.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'limits'}: {e['msg']}" for e in error.errors()
        )
        raise UsageError(f"--limit: {problems}") from None


def parse_key_id(text: str) -> str:
    """A key id, also accepted as listings show it (``lg_<id>_…``)."""
    key_id = text.strip()
    if key_id.startswith(KEY_PREFIX):
        key_id = key_id[len(KEY_PREFIX) :].split("_", 1)[0]
    if not is_key_id(key_id):
        raise UsageError(f"{text!r} is not a key id (16 characters, as keys list shows them)")
    return key_id


def parse_since(text: str) -> datetime:
    """ISO 8601; a time without an offset is taken as UTC (the log's own zone)."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"--since {text!r}: use ISO 8601, e.g. 2024-05-01T12:00:00Z") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


async def resolve_organization(store: Store, ref: str) -> Organization:
    """The organisation whose id, else whose name, is ``ref``; ``NotFound`` otherwise."""
    try:
        return await store.organizations.get(ref)
    except NotFound:
        pass
    orgs = await every(lambda after: store.organizations.list(limit=MAX_PAGE_SIZE, after=after))
    for org in orgs:
        if org.name == ref:
            return org
    raise NotFound(f"organization {ref!r} not found")


async def resolve_project(store: Store, organization_id: str, ref: str) -> Project:
    """The organisation's project whose id, else whose name, is ``ref``."""
    try:
        return await store.projects.get(ref, organization_id=organization_id)
    except NotFound:
        pass
    projects = await every(
        lambda after: store.projects.list(
            organization_id=organization_id, limit=MAX_PAGE_SIZE, after=after
        )
    )
    for project in projects:
        if project.name == ref:
            return project
    raise NotFound(f"project {ref!r} not found in the organization")


async def every(page: Callable[[str | None], Awaitable[Sequence[_R]]]) -> list[_R]:
    """All records of a keyset-paged listing (``page(after)``), in id (creation) order."""
    records: list[_R] = []
    after: str | None = None
    while True:
        batch = await page(after)
        records.extend(batch)
        if len(batch) < MAX_PAGE_SIZE:
            return records
        after = batch[-1].id
