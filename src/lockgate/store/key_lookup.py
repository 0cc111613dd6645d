"""The data plane's key loader for ``tenancy.key_cache.KeyCache``.

On a cache miss the cache calls ``load_key``: one indexed query for the key and
its project's model list (``ApiKeys.lookup_with_project``). Status, expiry and
hash comparison are the authenticator's, so a disabled key is still returned.
"""

from __future__ import annotations

from lockgate.store.store import Store
from lockgate.tenancy.key_cache import KeyGrant


class StoreKeyLookup:
    """A ``KeyLookup`` backed by the store (statements in their own short transaction)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def load_key(self, key_id: str) -> KeyGrant | None:
        """The key and its project's ``allowed_models``, or None if no such key exists.

        Raises ``StoreUnavailable`` when the database cannot answer.
        """
        found = await self._store.api_keys.lookup_with_project(key_id)
        if found is None:
            return None
        key, project_allowed_models = found
        return KeyGrant(key=key, project_allowed_models=project_allowed_models)
