"""The idempotency backend in Redis (scale-out: a retry may reach another replica).

One string per (tenant, key) under ``<redis.key_prefix>idem:<slot>``:

* ``P`` + claim token while the first request runs (expires after
  ``in_flight_ttl_s``, so a crashed worker's claim lapses);
* ``D`` + fingerprint + the stored answer once it succeeded (expires after ``ttl_s``).

Claiming is ``SET NX``: exactly one replica wins a key. Completing and releasing
compare the claim token in a Lua script, so a claim that lapsed and was taken
by another request is never overwritten or deleted by the late first one.
Duplicates waiting for a running request poll the key (every 25 ms, rising to
200 ms): waits are rare and short, and polling needs no extra connection.
"""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from lockgate.dataplane.idempotency import Found, StoredAnswer
from lockgate.routing.spec import IdempotencySpec

_FINGERPRINT_BYTES = 32  # SHA-256
_POLL_FIRST_S = 0.025
_POLL_MAX_S = 0.2

# KEYS[1] the slot; ARGV[1] the claim token, ARGV[2] the new value ('' to delete),
# ARGV[3] its time to live in ms. Acts only while the claim still holds the slot.
_IF_CLAIMED = """
if redis.call('GET', KEYS[1]) ~= 'P' .. ARGV[1] then return 0 end
if ARGV[2] == '' then return redis.call('DEL', KEYS[1]) end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"""


class RedisBackend:
    def __init__(self, url: str, prefix: str, spec: IdempotencySpec) -> None:
        self._redis = Redis.from_url(url, socket_connect_timeout=2.0, socket_timeout=2.0)
        self._prefix = prefix + "idem:"
        self._spec = spec
        self._if_claimed = self._redis.register_script(_IF_CLAIMED)

    def _key(self, slot: str) -> str:
        return self._prefix + slot

    async def claim(self, slot: str, fingerprint: bytes, token: bytes) -> Found | None:
        key = self._key(slot)
        in_flight_ms = round(self._spec.in_flight_ttl_s * 1000)
        if await self._redis.set(key, b"P" + token, nx=True, px=in_flight_ms):
            return None
        value = await self._get(key)
        if value is None:  # it lapsed or was released in between: try again
            return await self.claim(slot, fingerprint, token)
        if value[:1] == b"P":
            return Found(value[1 : 1 + _FINGERPRINT_BYTES], None)
        stored = value[1 + _FINGERPRINT_BYTES :]
        return Found(value[1 : 1 + _FINGERPRINT_BYTES], StoredAnswer.decode(stored))

    async def _get(self, key: str) -> bytes | None:
        value = await self._redis.get(key)
        return value.encode() if isinstance(value, str) else value

    async def complete(self, slot: str, token: bytes, answer: StoredAnswer) -> None:
        value = b"D" + token[:_FINGERPRINT_BYTES] + answer.encode()
        ttl_ms = round(self._spec.ttl_s * 1000)
        await self._if_claimed(keys=[self._key(slot)], args=[token, value, ttl_ms])

    async def release(self, slot: str, token: bytes) -> None:
        await self._if_claimed(keys=[self._key(slot)], args=[token, b"", 0])

    async def wait(self, slot: str, timeout_s: float) -> None:
        """Poll until the slot is no longer a running claim, or ``timeout_s`` passed."""
        loop = asyncio.get_running_loop()
        until = loop.time() + timeout_s
        pause_s = _POLL_FIRST_S
        key = self._key(slot)
        while (left_s := until - loop.time()) > 0:
            await asyncio.sleep(min(pause_s, left_s))
            value = await self._get(key)
            if value is None or value[:1] != b"P":
                return
            pause_s = min(_POLL_MAX_S, pause_s * 2)

    async def close(self) -> None:
        await self._redis.aclose()
