"""``Idempotency-Key`` on non-streamed /v1 requests: a retry never runs (or bills) twice.

A client whose connection dropped after sending does not know whether the
model answered. With an ``Idempotency-Key`` (the IETF httpapi draft; Stripe's
and OpenAI's SDK convention) it can simply send again:

* same key, same body (SHA-256 of path and bytes) → the stored answer, with
  ``idempotent-replayed: true``; no upstream call, and a usage record of zero
  tokens (the request never reached an upstream);
* same key, another body → 422 ``idempotency_key_reused``;
* while the first is still running → the duplicate waits for it (at most
  ``wait_s``, then 409 ``idempotency_key_in_flight``);
* the first failed (an error, a client that left) → nothing is stored and the
  key is free again: the retry runs for real.

Keys are scoped to the tenant (the principal's project, else organisation,
else principal), so two customers can never see each other's answers. Only
successful answers are stored, for ``ttl_s``. The state lives in a
``Backend``: in process (embedded mode, ``LocalBackend``) or in Redis
(scale-out, ``idempotency_redis.RedisBackend``), behind one small protocol.

Cost: nothing for requests without the header (one dict lookup); the forward
stage calls ``begin`` only when it is present.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
from collections import OrderedDict
from collections.abc import Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from lockgate.errors import ClientError
from lockgate.routing.spec import IdempotencySpec

if TYPE_CHECKING:
    from lockgate.dataplane.context import RequestContext

IDEMPOTENCY_HEADER = b"idempotency-key"
_PRINTABLE = re.compile(rb"[\x20-\x7e]+")
_MAX_KEY_BYTES = 255


class InvalidIdempotencyKey(ClientError):
    code = "invalid_idempotency_key"


class IdempotencyKeyReused(ClientError):
    """The key was used before, by the same tenant, for a different request."""

    status = 422
    code = "idempotency_key_reused"


class IdempotencyKeyInFlight(ClientError):
    """A request with this key is still running and did not finish within the wait."""

    status = 409
    code = "idempotency_key_in_flight"


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    """A successful answer as the client received it, and who served it."""

    content_type: bytes
    body: bytes
    model: str
    deployment: str

    def encode(self) -> bytes:
        head = orjson.dumps([self.content_type.decode("latin-1"), self.model, self.deployment])
        return head + b"\n" + self.body

    @classmethod
    def decode(cls, data: bytes) -> StoredAnswer:
        head, _, body = data.partition(b"\n")
        content_type, model, deployment = orjson.loads(head)
        return cls(content_type.encode("latin-1"), body, model, deployment)


class Replay:
    """What ``forward`` returns for a stored answer: ``with replay as answer: relay(...)``."""

    __slots__ = ("answer",)

    def __init__(self, answer: StoredAnswer) -> None:
        self.answer = answer

    def __enter__(self) -> StoredAnswer:
        return self.answer

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


@dataclass(frozen=True, slots=True)
class Found:
    """What a claim attempt found: someone else's entry (``answer`` None: still running)."""

    fingerprint: bytes
    answer: StoredAnswer | None


class Backend(Protocol):
    async def claim(self, slot: str, fingerprint: bytes, token: bytes) -> Found | None:
        """Take ``slot`` for a new request (None), or say what holds it."""
        ...

    async def complete(self, slot: str, token: bytes, answer: StoredAnswer) -> None:
        """Store the answer of the claim ``token`` (for ``ttl_s``)."""
        ...

    async def release(self, slot: str, token: bytes) -> None:
        """Free ``slot`` if the claim ``token`` still holds it."""
        ...

    async def wait(self, slot: str, timeout_s: float) -> None:
        """Return when ``slot`` may have changed, or after ``timeout_s``."""
        ...

    async def close(self) -> None: ...


class Claim:
    """A request's hold on its key; ``settle`` runs once when the request is over."""

    __slots__ = ("_store", "answer", "fingerprint", "slot", "token")

    def __init__(self, store: IdempotencyStore, slot: str, fingerprint: bytes) -> None:
        self._store = store
        self.slot = slot
        self.fingerprint = fingerprint
        self.token = fingerprint + os.urandom(8)
        # Set by the relay once the whole answer was sent to the client.
        self.answer: StoredAnswer | None = None

    def keep(self, answer: StoredAnswer) -> None:
        """The relay sent ``answer`` in full: store it when the request ends well (unless it
        is larger than ``max_response_bytes``: a retry then runs again)."""
        if len(answer.body) <= self._store.spec.max_response_bytes:
            self.answer = answer

    def settle(self, ctx: RequestContext) -> None:
        """Store the answer if the request succeeded, else free the key for a retry."""
        ctx.idempotency = None
        answer = self.answer
        if answer is not None and ctx.error is None and not ctx.is_client_disconnected:
            self._store.spawn(self._store.backend.complete(self.slot, self.token, answer))
        else:
            self._store.spawn(self._store.backend.release(self.slot, self.token))


class IdempotencyStore:
    """Claims, waits and replays; the backend keeps the state. One per worker."""

    def __init__(self, backend: Backend, spec: IdempotencySpec) -> None:
        self.backend = backend
        self.spec = spec
        # Completions and releases run as owned tasks (the relay must not wait on Redis);
        # ``close`` waits for them.
        self._tasks: set[asyncio.Task[None]] = set()

    async def begin(self, ctx: RequestContext, key: bytes) -> Replay | None:
        """Claim ``key`` for ``ctx`` (sets ``ctx.idempotency``; returns None), or the
        ``Replay`` of the answer stored under it. Raises ``InvalidIdempotencyKey``,
        ``IdempotencyKeyReused`` or ``IdempotencyKeyInFlight``."""
        if not key or len(key) > _MAX_KEY_BYTES or not _PRINTABLE.fullmatch(key):
            raise InvalidIdempotencyKey(
                f"The Idempotency-Key header must be 1 to {_MAX_KEY_BYTES} printable ASCII "
                "characters.",
                param="Idempotency-Key",
            )
        principal = ctx.principal
        tenant = principal.project_id or principal.organization_id or principal.id
        slot = hashlib.sha256(b"%s\x00%s" % (tenant.encode(), key)).hexdigest()
        fingerprint = hashlib.sha256(b"%s\x00%s" % (ctx.http.path.encode(), ctx.http.body)).digest()
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self.spec.wait_s
        claim = Claim(self, slot, fingerprint)
        while True:
            found = await self.backend.claim(slot, fingerprint, claim.token)
            if found is None:
                ctx.idempotency = claim
                return None
            if found.fingerprint != fingerprint:
                raise IdempotencyKeyReused(
                    "This Idempotency-Key was already used for a different request; use a "
                    "new key for a new request.",
                    param="Idempotency-Key",
                )
            if found.answer is not None:
                return Replay(found.answer)
            left_s = give_up_at - loop.time()
            if left_s <= 0:
                raise IdempotencyKeyInFlight(
                    "A request with this Idempotency-Key is still being processed; retry later.",
                    param="Idempotency-Key",
                    headers=((b"retry-after", b"1"),),
                )
            await self.backend.wait(slot, left_s)

    def abandon(self, ctx: RequestContext) -> None:
        """The request failed before any answer: free its key (if it holds one)."""
        claim = ctx.idempotency
        if claim is not None:
            claim.settle(ctx)

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Finish pending completions and releases, then close the backend."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.backend.close()


class _Entry:
    __slots__ = ("answer", "expires_at", "fingerprint", "token", "wakeup")

    def __init__(self, fingerprint: bytes, token: bytes, expires_at: float) -> None:
        self.fingerprint = fingerprint
        self.token = token
        self.expires_at = expires_at
        self.answer: StoredAnswer | None = None
        self.wakeup = asyncio.Event()


class LocalBackend:
    """In-process entries (embedded mode: one worker, so one process sees every retry).

    Entries are kept in insertion order; expired ones are dropped from the front as new
    keys arrive, and the oldest beyond ``max_entries`` too, so memory stays bounded.
    """

    def __init__(self, spec: IdempotencySpec) -> None:
        self._spec = spec
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    async def claim(self, slot: str, fingerprint: bytes, token: bytes) -> Found | None:
        now = self._now()
        entries = self._entries
        entry = entries.get(slot)
        if entry is not None and entry.expires_at > now:
            return Found(entry.fingerprint, entry.answer)
        if entry is not None:
            del entries[slot]
        while entries:
            oldest = next(iter(entries.values()))
            if oldest.expires_at > now and len(entries) < self._spec.max_entries:
                break
            entries.popitem(last=False)
            oldest.wakeup.set()
        entries[slot] = _Entry(fingerprint, token, now + self._spec.in_flight_ttl_s)
        return None

    async def complete(self, slot: str, token: bytes, answer: StoredAnswer) -> None:
        entry = self._entries.get(slot)
        if entry is None or entry.token != token:
            return
        entry.answer = answer
        entry.expires_at = self._now() + self._spec.ttl_s
        self._entries.move_to_end(slot)  # expiry order is insertion order
        entry.wakeup.set()

    async def release(self, slot: str, token: bytes) -> None:
        entry = self._entries.get(slot)
        if entry is not None and entry.token == token and entry.answer is None:
            del self._entries[slot]
            entry.wakeup.set()

    async def wait(self, slot: str, timeout_s: float) -> None:
        entry = self._entries.get(slot)
        if entry is None:
            return
        try:
            async with asyncio.timeout(timeout_s):
                await entry.wakeup.wait()
        except TimeoutError:
            pass

    async def close(self) -> None:
        self._entries.clear()


def build_idempotency(spec: IdempotencySpec) -> IdempotencyStore | None:
    """The in-process store (None when disabled); scale-out passes a Redis one instead."""
    return IdempotencyStore(LocalBackend(spec), spec) if spec.enabled else None
