"""Signing webhook payloads as Stripe does, and verifying them on the receiving side.

Every delivery carries::

    Lockgate-Signature: t=1767225600,v1=5257a869e7ec…(64 hex digits)

``t`` is the Unix time of signing; ``v1`` is the hex HMAC-SHA256, keyed with
the subscription's secret (the whole ``whsec_…`` text, as UTF-8), of
``f"{t}.".encode() + body``. While a rotated-out secret is still in its grace
period a second ``v1`` is sent, signed with it, so a receiver can switch
secrets at its own pace. A receiver checks that some ``v1`` matches (in
constant time) and that ``t`` is recent (``tolerance_s``, default 5 minutes),
which bounds how long a captured request can be replayed; receivers that must
refuse replays entirely also remember ``Lockgate-Event-Id`` values (a retry
of one delivery carries the same id, re-signed).

``verify`` below has no dependency beyond the standard library: receivers may
copy it (docs/webhooks.md shows it standalone).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Iterable

SIGNATURE_HEADER = "Lockgate-Signature"
SECRET_PREFIX = "whsec_"  # noqa: S105 - the prefix of generated secrets, not one
DEFAULT_TOLERANCE_S = 300


class SignatureError(ValueError):
    """The payload's signature is missing, malformed, does not match, or is too old."""


def new_secret() -> str:
    """A fresh signing secret: ``whsec_`` + 24 random bytes in standard base64 (32
    characters, no padding), the form Standard Webhooks libraries decode."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The hex ``v1`` value for ``body`` signed at ``timestamp``."""
    message = b"%d." % timestamp + body
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def signature_header(secrets_in_use: Iterable[str], timestamp: int, body: bytes) -> str:
    """``t=…,v1=…[,v1=…]``: one ``v1`` per secret (current first)."""
    parts = [f"t={timestamp}"]
    parts.extend(f"v1={signature(secret, timestamp, body)}" for secret in secrets_in_use)
    return ",".join(parts)


def verify(
    body: bytes,
    header: str | None,
    secret: str,
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> int:
    """Check a received ``Lockgate-Signature``; return its timestamp, or raise ``SignatureError``.

    ``body`` must be the raw request body, byte for byte (not re-serialised JSON).
    """
    if not header:
        raise SignatureError(f"no {SIGNATURE_HEADER} header")
    timestamp: int | None = None
    candidates: list[str] = []
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        if name == "t":
            try:
                timestamp = int(value)
            except ValueError:
                raise SignatureError("the signature's timestamp is not an integer") from None
        elif name == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        raise SignatureError("the signature header needs t=<unix time> and v1=<hex>")
    expected = signature(secret, timestamp, body)
    if not any(hmac.compare_digest(expected, candidate) for candidate in candidates):
        raise SignatureError("no signature matches the payload (wrong secret, or altered body)")
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        raise SignatureError(
            f"the signature is {abs(current - timestamp):.0f} s old, over the {tolerance_s:g} s "
            "tolerance (a replay, or a clock off)"
        )
    return timestamp
