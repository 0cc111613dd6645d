"""The RESP encoding the Redis limiter sends: bulk strings, decision plans, settlement ops.

Packed by hand, once per plan where possible, so a batch of decisions costs a
``join`` rather than redis-py's per-argument encoding (see ``redis_batch.py``).
The layout of the arguments is what ``redis_script.BATCH_LUA`` reads.
"""

from __future__ import annotations

from collections.abc import Sequence


def bulk(value: bytes) -> bytes:
    """``value`` as a RESP bulk string."""
    return b"$%d\r\n%s\r\n" % (len(value), value)


def bulk_number(value: float) -> bytes:
    """A number as a RESP bulk string Lua's ``tonumber`` reads back exactly."""
    text = b"%.17g" % value
    return b"$%d\r\n%s\r\n" % (len(text), text)


_SMALL_INTS = tuple(bulk(b"%d" % number) for number in range(1024))


def bulk_int(value: int) -> bytes:
    return _SMALL_INTS[value] if value < 1024 else bulk(b"%d" % value)


ACQUIRE = bulk(b"a")
RELEASE = bulk(b"c")
CORRECT = bulk(b"r")

# What a call waiting in a batch is given: its part of the answer (a decision's tokens; None
# for a settlement), or the exception that failed its batch.
Outcome = list[bytes] | BaseException | None
# Lease releases: (namespaced key, lease id).
Releases = list[tuple[str, str]]


class Plan:
    """One sequence of limits, encoded once: what every decision on it sends.

    ``keys[i]`` is limit i's namespaced key as a RESP bulk string; ``statics[i]``
    its kind, interval and size, also packed; ``is_rate[i]`` whether its cost is
    sent (a concurrency limit always costs 1). ``lease_keys`` are the namespaced
    keys of its concurrency limits (what to release if a decision's answer is lost).
    """

    __slots__ = ("head", "is_rate", "keys", "lease_keys", "nargs", "ntokens", "statics")

    def __init__(
        self,
        keys: Sequence[str],
        kinds: Sequence[bool],
        intervals: Sequence[float],
        sizes: Sequence[float],
    ) -> None:
        count = len(keys)
        self.keys = tuple(bulk(key.encode()) for key in keys)
        self.is_rate = tuple(kinds)
        # The kind codes are the letters of the settlement ops: 'r' rate, 'c' concurrency.
        self.statics = tuple(
            (CORRECT if is_rate else RELEASE) + bulk_number(interval) + bulk_number(size)
            for is_rate, interval, size in zip(kinds, intervals, sizes, strict=True)
        )
        self.lease_keys = tuple(
            key for key, is_rate in zip(keys, kinds, strict=True) if not is_rate
        )
        self.head = ACQUIRE + bulk_int(count)
        self.nargs = 3 + 5 * count
        self.ntokens = 2 + 2 * count


# A settlement's operation: (op code, key as a bulk string, the rest packed, argument count).
Op = tuple[bytes, bytes, bytes, int]
ONE = bulk(b"1")
