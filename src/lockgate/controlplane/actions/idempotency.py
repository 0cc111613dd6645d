"""Idempotent key creation and rotation (the IETF Idempotency-Key draft, PEERS.md #10).

A client that retries ``POST …/api_keys`` or ``POST …/rotate`` after a lost
response must not get a second key or a second rotation, and must get the
secret it missed. So, per (principal, Idempotency-Key), for 24 hours:

* the first request claims a record in the same transaction as its change and
  completes it with the response before commit — change and record commit
  together or not at all;
* a retry with the same body (same fingerprint) gets the stored response
  again; with a different body, 422 ``idempotency_key_reused``;
* two concurrent requests with one key: the second waits on the record's
  primary key, loses (``Conflict``), rolls back its own change, and replays.

The response holds a secret, so it is stored encrypted under the master
keyring (AES-256-GCM, bound to the principal and key). Without a master key
only the fingerprint is kept: a retry still does not act twice, but gets 409
``idempotency_replay_unavailable`` (the secret was shown once and is gone).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import orjson

from lockgate.controlplane.actions.base import ActionsBase
from lockgate.controlplane.actions.errors import IdempotencyKeyReused, IdempotencyReplayUnavailable
from lockgate.errors import InvalidParameter
from lockgate.store.columns import utc_now
from lockgate.store.errors import Conflict, StoreError
from lockgate.store.store import Transaction

log = logging.getLogger("lockgate.controlplane.idempotency")

REPLAY_WINDOW = timedelta(hours=24)
HEADER = "Idempotency-Key"
_KEY = re.compile(r"[\x21-\x7e]{1,255}")  # visible ASCII, as the draft's examples
_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class IdempotentRequest:
    """One request under an Idempotency-Key: who sent it, the key, and its fingerprint."""

    principal: str
    key: str
    fingerprint: str

    @classmethod
    def of(
        cls, principal: str, key: str, operation: str, body: Mapping[str, Any]
    ) -> IdempotentRequest:
        """``operation`` names the endpoint and its path ids (``POST /…/rotate``), ``body``
        the validated body with defaults filled, so equal requests fingerprint equally
        whatever their whitespace or key order. Raises ``InvalidParameter`` for a bad key."""
        if not _KEY.fullmatch(key):
            raise InvalidParameter(
                f"{HEADER} must be 1 to 255 visible ASCII characters (e.g. a UUID)", param=HEADER
            )
        canonical = orjson.dumps([operation, body], option=orjson.OPT_SORT_KEYS)
        return cls(principal, key, hashlib.sha256(canonical).hexdigest())


class IdempotencyClaimLost(Exception):
    """A concurrent request with the same key committed first; this one rolled back."""


Response = dict[str, Any]


class IdempotencyActions(ActionsBase):
    async def once(
        self,
        request: IdempotentRequest | None,
        run: Callable[[IdempotentRequest | None], Awaitable[Response]],
    ) -> tuple[Response, bool]:
        """``run(request)`` at most once per key and fingerprint; ``(response, replayed)``.

        ``run`` must pass ``request`` to an action that claims and completes the record
        in its transaction (``create_api_key``, ``rotate_api_key``).
        """
        if request is None:
            return await run(None), False
        await self._purge_expired()
        for _ in range(_ATTEMPTS):
            stored = await self.replay(request)
            if stored is not None:
                return stored, True
            try:
                return await run(request), False
            except IdempotencyClaimLost:
                continue  # the winner has committed by now: replay what it stored
        raise IdempotencyReplayUnavailable(
            "Another request with this Idempotency-Key is still being processed; retry shortly."
        )

    async def replay(self, request: IdempotentRequest) -> Response | None:
        """The stored response for ``request``, or None if the key is new (or expired).

        Raises ``IdempotencyKeyReused`` for a different request under the same key and
        ``IdempotencyReplayUnavailable`` when the response was not (or cannot be) kept.
        """
        record = await self._store.idempotency.get(request.principal, request.key)
        if record is None or record.expires_at <= utc_now():
            return None
        if record.request_hash != request.fingerprint:
            raise IdempotencyKeyReused(
                f"This {HEADER} was already used for a different request (another endpoint, "
                "object or body); use a new key for a new request.",
                param=HEADER,
            )
        if record.response is None or self._keyring is None:
            raise IdempotencyReplayUnavailable(
                f"The request with this {HEADER} was already done, and not repeated. Its "
                "response held a secret that is shown once: it cannot be replayed because no "
                "master key (LOCKGATE_MASTER_KEYS) is configured to keep it encrypted."
            )
        from lockgate.tenancy.secretbox import SecretBoxError

        try:
            plaintext = self._keyring.decrypt(record.response, _aad(request))
        except SecretBoxError:
            raise IdempotencyReplayUnavailable(
                f"The request with this {HEADER} was already done, and not repeated; its "
                "stored response no longer decrypts (was the master key retired?)."
            ) from None
        stored: Response = orjson.loads(plaintext)
        return stored

    async def _claim(
        self, tx: Transaction, request: IdempotentRequest | None, organization_id: str | None
    ) -> None:
        """First in the action's transaction: blocks a concurrent duplicate until commit."""
        if request is None:
            return
        try:
            await tx.idempotency.claim(
                principal=request.principal,
                idempotency_key=request.key,
                request_hash=request.fingerprint,
                organization_id=organization_id,
                expires_at=utc_now() + REPLAY_WINDOW,
            )
        except Conflict as error:
            raise IdempotencyClaimLost from error

    async def _complete(
        self, tx: Transaction, request: IdempotentRequest | None, response: Response
    ) -> None:
        """Store the response (encrypted; or nothing without a master key)."""
        if request is None:
            return
        sealed = None
        if self._keyring is not None:
            sealed = self._keyring.encrypt(orjson.dumps(response), _aad(request))
        await tx.idempotency.complete(request.principal, request.key, sealed)

    async def _purge_expired(self) -> None:
        """Best effort: expired responses (which hold secrets) are deleted, not kept."""
        try:
            await self._store.idempotency.purge_expired()
        except StoreError as error:  # e.g. a concurrent purge: the next request retries
            log.warning("could not purge expired idempotency records: %s", error)


def _aad(request: IdempotentRequest) -> bytes:
    """Bind the sealed response to its owner: another principal's row will not decrypt."""
    from lockgate.tenancy.secretbox import associated_data

    return associated_data("idempotency", request.principal, request.key)
