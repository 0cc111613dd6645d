"""Request debugging: start and stop a key's debug session, audited, heard by every worker.

"Trace this key's next N requests at full detail" is an admin action like any
other: the session row and its audit entry commit together, then the
invalidation bus tells every gateway process (``TOPIC_REQUEST_DEBUG``) to
reload the active sessions; they also reload on their own every few seconds,
so a lost message delays a session, never loses it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from lockgate.controlplane.actions.base import Actor, audit
from lockgate.invalidation.bus import InvalidationBus
from lockgate.observability.debug_model import DebugSession
from lockgate.store.columns import utc_now
from lockgate.store.repositories.request_debug import request_debug
from lockgate.store.store import Store

# The key is a session id (start) or a key id (stop): receivers reload either way.
TOPIC_REQUEST_DEBUG = "request_debug"


class RequestDebugActions:
    """Built once per process with the store and the bus (``Services.admin_app``, the CLI)."""

    def __init__(self, store: Store, bus: InvalidationBus) -> None:
        self._store = store
        self._bus = bus

    async def start(
        self,
        actor: Actor,
        *,
        organization_id: str,
        key_id: str,
        requests: int,
        ttl_s: float,
    ) -> DebugSession:
        """Capture the key's next ``requests`` requests (at most ``ttl_s`` from now).

        Raises ``NotFound`` for a key outside ``organization_id``.
        """
        async with self._store.transaction() as tx:
            key = await tx.api_keys.get(key_id, organization_id=organization_id)
            session = await request_debug(tx).create_session(
                organization_id=key.organization_id,
                project_id=key.project_id,
                api_key_id=key.id,
                requested=requests,
                created_by=actor.id,
                expires_at=utc_now() + timedelta(seconds=ttl_s),
            )
            await audit(
                tx,
                actor,
                "api_key.debug_start",
                "api_key",
                key.id,
                key.organization_id,
                after=session.to_json(session.created_at),
            )
        await self._bus.publish(TOPIC_REQUEST_DEBUG, session.id)
        return session

    async def stop(
        self, actor: Actor, *, organization_id: str, key_id: str
    ) -> Sequence[DebugSession]:
        """End the key's active sessions; returns them (empty: there were none, and
        nothing is audited)."""
        async with self._store.transaction() as tx:
            key = await tx.api_keys.get(key_id, organization_id=organization_id)
            stopped = await request_debug(tx).stop_sessions(
                organization_id=organization_id, api_key_id=key.id
            )
            if stopped:
                now = utc_now()
                await audit(
                    tx,
                    actor,
                    "api_key.debug_stop",
                    "api_key",
                    key.id,
                    key.organization_id,
                    before={"sessions": [s.to_json(now) for s in stopped]},
                )
        if stopped:
            await self._bus.publish(TOPIC_REQUEST_DEBUG, key_id)
        return stopped
