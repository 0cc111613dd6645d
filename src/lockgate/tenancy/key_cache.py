"""The hot path's view of API keys: authentication without a database round trip.

Entries are pushed out by invalidation messages (revoke, rotate, project or
organisation change) within a second on every replica; the TTL is only a safety net.
Unknown key ids are cached negatively, and loads of never-seen ids draw from
a small per-process budget, so a flood of random keys cannot hammer the
database. Concurrent misses for one id share one load (single flight).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from lockgate.errors import GatewayError
from lockgate.tenancy.model import ApiKeyRecord, Organization, Project


@dataclass(frozen=True, slots=True)
class KeyGrant:
    """A key with the project and organisation it belongs to, loaded together: their
    model allow-lists and limits all apply to every request made with the key."""

    key: ApiKeyRecord
    project: Project
    organization: Organization
    # A key acting for a disabled service account may not be used anywhere.
    service_account_disabled: bool = False


class KeyLookup(Protocol):
    async def load_key(self, key_id: str) -> KeyGrant | None:
        """The key with its project and organisation, or None if no such key exists."""
        ...


class AuthBackendBusy(GatewayError):
    """Too many lookups of unknown keys right now; the client may retry shortly."""

    status = 503
    code = "auth_backend_busy"

    def __init__(self) -> None:
        super().__init__(
            "Too many requests with unrecognised API keys; retry shortly.",
            headers=((b"retry-after", b"1"),),
        )


class Miss:
    """``KeyCache.peek`` found nothing fresh: call ``get``."""


MISS = Miss()


@dataclass(slots=True)
class _Entry:
    grant: KeyGrant | None  # None: known not to exist
    fresh_until: float


class KeyCache:
    def __init__(
        self,
        lookup: KeyLookup,
        *,
        max_entries: int = 100_000,
        ttl_s: float = 60.0,
        negative_ttl_s: float = 10.0,
        unknown_loads_per_s: float = 100.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lookup = lookup
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._max_entries = max_entries
        self._ttl_s = ttl_s
        self._negative_ttl_s = negative_ttl_s
        self._clock = clock
        self._inflight: dict[str, asyncio.Future[KeyGrant | None]] = {}
        # Token bucket for loads of ids we have never seen.
        self._rate = unknown_loads_per_s
        self._tokens = unknown_loads_per_s
        self._refilled_at = clock()
        self.loads = 0  # how many times the lookup ran (observability and tests)
        # Bumped by every invalidation: a load that overlapped one is not cached,
        # since it may have read the row just before the change committed.
        self._generation = 0

    def peek(self, key_id: str) -> KeyGrant | Miss | None:
        """A fresh cached answer without awaiting (the hot path), else ``MISS``."""
        entry = self._entries.get(key_id)
        if entry is not None and entry.fresh_until > self._clock():
            return entry.grant
        return MISS

    async def get(self, key_id: str) -> KeyGrant | None:
        entry = self._entries.get(key_id)
        now = self._clock()
        if entry is not None and entry.fresh_until > now:
            self._entries.move_to_end(key_id)
            return entry.grant
        pending = self._inflight.get(key_id)
        if pending is not None:
            return await asyncio.shield(pending)
        if entry is None:
            self._spend_unknown_budget(now)
        return await self._load(key_id)

    def _spend_unknown_budget(self, now: float) -> None:
        self._tokens = min(self._rate, self._tokens + (now - self._refilled_at) * self._rate)
        self._refilled_at = now
        if self._tokens < 1.0:
            raise AuthBackendBusy
        self._tokens -= 1.0

    async def _load(self, key_id: str) -> KeyGrant | None:
        future: asyncio.Future[KeyGrant | None] = asyncio.get_running_loop().create_future()
        self._inflight[key_id] = future
        generation = self._generation
        try:
            self.loads += 1
            grant = await self._lookup.load_key(key_id)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody else must
            raise
        else:
            future.set_result(grant)
            if generation == self._generation:
                ttl = self._ttl_s if grant is not None else self._negative_ttl_s
                self._store(key_id, _Entry(grant, self._clock() + ttl))
            return grant
        finally:
            del self._inflight[key_id]

    def _store(self, key_id: str, entry: _Entry) -> None:
        self._entries[key_id] = entry
        self._entries.move_to_end(key_id)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    # -- invalidation (called from the bus's subscriber; cheap and synchronous) --
    def invalidate(self, key_id: str) -> None:
        self._generation += 1
        self._entries.pop(key_id, None)

    def invalidate_project(self, project_id: str) -> None:
        self._generation += 1
        stale = [
            k for k, e in self._entries.items() if e.grant and e.grant.key.project_id == project_id
        ]
        for key_id in stale:
            del self._entries[key_id]

    def invalidate_organization(self, organization_id: str) -> None:
        """Drop every key of the organisation (its ceiling or limits changed, or it is gone)."""
        self._generation += 1
        stale = [
            k
            for k, e in self._entries.items()
            if e.grant and e.grant.key.organization_id == organization_id
        ]
        for key_id in stale:
            del self._entries[key_id]

    def clear(self) -> None:
        """After a lost invalidation connection: anything may have changed meanwhile."""
        self._generation += 1
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
