"""Cache affinity: consistent hashing with bounded load.

Engines keep a prefix (KV) cache: a request whose prompt starts like an earlier
one skips that part of prefill. Spreading requests evenly throws the benefit
away; sending each prefix (or each session) to "its" replica keeps it. Plain
hashing would let one hot prefix melt its replica, so this is Mirrokni et
al.'s *consistent hashing with bounded loads* (as in HAProxy and Envoy): walk
the ring from the key's point and take the first replica whose outstanding
requests stay within ⌈(1 + ε) * average⌉; a hot key spills to the next replica
on the ring (the same one every time, so the spill-over warms one cache, not all).

The key hash is CRC-32, not ``hash()``: it must be the same in every worker
process and every gateway replica, or they would each send a prefix elsewhere.
"""

from __future__ import annotations

import math
import zlib
from bisect import bisect
from collections.abc import Sequence
from typing import Any

from lockgate.routing.member import Member
from lockgate.routing.spec import AffinitySpec
from lockgate.routing.strategies import LeastOutstanding

# Points per unit of weight on the ring: enough for an even split of keys among a
# handful of replicas (the spread of shares shrinks with 1/sqrt(points)).
_POINTS_PER_MEMBER = 160


def _point(data: bytes) -> int:
    """Where ``data`` sits on the ring (a 32-bit circle).

    CRC-32: stable across processes (unlike ``hash()``), spreads distinct keys evenly,
    and costs a tenth of a microsecond on a 512-byte prefix, where a cryptographic
    hash costs over one — it runs on every request, and nobody gains by forging keys
    beyond picking their own replica, which a session header already allows.
    """
    return zlib.crc32(data)


class CacheAffinity:
    needs_key = True

    def __init__(self, members: Sequence[Member], spec: AffinitySpec) -> None:
        self._factor = 1.0 + spec.load_factor
        self._size = len(members)
        heaviest = max((m.weight for m in members), default=1.0)
        points: list[tuple[int, int]] = []
        for index, member in enumerate(members):
            count = max(1, round(_POINTS_PER_MEMBER * member.weight / heaviest))
            name = member.name.encode()
            points.extend((_point(b"%s#%d" % (name, v)), index) for v in range(count))
        points.sort()
        self._points = [p for p, _ in points]
        self._owners = [members[i] for _, i in points]
        self._without_key = LeastOutstanding()

    def pick(self, candidates: Sequence[Member], key: bytes | None, now: float) -> Member:
        if key is None:
            return self._without_key.pick(candidates, None, now)
        if len(candidates) == 1:
            return candidates[0]
        total = 1  # the request being placed counts towards the average
        for member in candidates:
            total += member.outstanding
        bound = math.ceil(self._factor * total / len(candidates))
        # Usually every member is a candidate and membership needs no check.
        allowed = None if len(candidates) == self._size else set(candidates)
        owners = self._owners
        count = len(owners)
        start = bisect(self._points, _point(key))
        for step in range(count):
            member = owners[(start + step) % count]
            if member.outstanding < bound and (allowed is None or member in allowed):
                return member
        # Unreachable (some candidate is always at or below the average), kept total.
        return self._without_key.pick(candidates, None, now)


class KeyReader:
    """Reads a request's affinity key from its headers and parsed body.

    Sources are tried in the configured order; the first one present wins. Keys
    carry their source as a prefix so a session id never collides with a prompt.
    """

    __slots__ = ("_header", "_limit", "_sources")

    def __init__(self, spec: AffinitySpec) -> None:
        self._sources = tuple(spec.sources)
        self._header = spec.header.encode()
        self._limit = spec.prefix_bytes

    def __call__(self, headers: dict[bytes, bytes], body: dict[str, Any] | None) -> bytes | None:
        for source in self._sources:
            if source == "header":
                value = headers.get(self._header)
                if value:
                    return b"h:" + value
            elif body is not None:
                if source == "user":
                    user = body.get("user")
                    if isinstance(user, str) and user:
                        return b"u:" + user.encode()
                else:
                    prefix = prompt_prefix(body, self._limit)
                    if prefix:
                        return b"p:" + prefix
        return None


def prompt_prefix(body: dict[str, Any], limit: int) -> bytes:
    """The first ``limit`` bytes of the prompt: chat messages in order (role and text),
    else ``prompt`` (completions) or ``input`` (embeddings). Empty if there is none."""
    messages = body.get("messages")
    if isinstance(messages, list):
        parts: list[str] = []
        size = 0
        for message in messages:
            if not isinstance(message, dict):
                continue
            piece = f"{message.get('role')}\x1f{_text(message.get('content'))}\x1e"
            parts.append(piece)
            size += len(piece)  # characters ≤ bytes: enough to know when to stop
            if size >= limit:
                break
        return "".join(parts).encode()[:limit]
    prompt = body.get("prompt", body.get("input"))
    if isinstance(prompt, list) and prompt:
        first = prompt[0]
        if isinstance(first, str):
            prompt = first
        elif isinstance(first, int):  # token ids
            prompt = ",".join(str(t) for t in prompt[:limit])
        elif isinstance(first, list):  # batches of token ids
            prompt = ",".join(str(t) for t in first[:limit])
    return prompt.encode()[:limit] if isinstance(prompt, str) else b""


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: the text ones are the prompt
        return "".join(
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""
