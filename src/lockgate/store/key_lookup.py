"""The data plane's key loader for ``tenancy.key_cache.KeyCache``.

On a cache miss the cache calls ``load_key``: one indexed query for the key,
its project, its organisation and its service account's status
(``ApiKeys.lookup_grant``). Status, expiry and hash comparison are the
authenticator's, so a disabled key is still returned.
"""

from __future__ import annotations

from lockgate.store.store import Store
from lockgate.tenancy.key_cache import KeyGrant


class StoreKeyLookup:
    """A ``KeyLookup`` backed by the store (statements in their own short transaction)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def load_key(self, key_id: str) -> KeyGrant | None:
        """The key with its project and organisation, or None if no such key exists.

        Raises ``StoreUnavailable`` when the database cannot answer.
        """
        return await self._store.api_keys.lookup_grant(key_id)
