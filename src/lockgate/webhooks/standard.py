"""Standard Webhooks signatures (standardwebhooks.com), sent beside ``Lockgate-Signature``.

Receivers built on a Standard Webhooks library (Svix's, the spec's reference
implementations in a dozen languages) verify deliveries without custom code:

    webhook-id: <the event id: the same on every retry of one event>
    webhook-timestamp: <Unix seconds of this attempt>
    webhook-signature: v1,<base64 HMAC-SHA256> [v1,<…> while a rotated secret lasts]

The HMAC is keyed with the secret's bytes (the base64 text after ``whsec_``,
decoded) over ``f"{id}.{timestamp}.".encode() + body``. Secrets made before this
scheme are URL-safe base64 (``-`` and ``_``): they are decoded as such, so their
signatures are right, though a strict library may refuse such a secret; rotate
it to get a standard one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Iterable, Mapping

from lockgate.webhooks.signing import DEFAULT_TOLERANCE_S, SECRET_PREFIX, SignatureError

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"


def _key(secret: str) -> bytes:
    text = secret.removeprefix(SECRET_PREFIX)
    padded = text + "=" * (-len(text) % 4)
    try:
        return base64.b64decode(padded, validate=True)
    except binascii.Error:
        return base64.urlsafe_b64decode(padded)


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64>`` for one secret."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(
    secrets_in_use: Iterable[str], message_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The three headers, one signature per secret (current first)."""
    return {
        ID_HEADER: message_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: " ".join(
            signature(secret, message_id, timestamp, body) for secret in secrets_in_use
        ),
    }


def verify(
    body: bytes,
    received: Mapping[str, str],
    secret: str,
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> int:
    """Check a delivery's Standard Webhooks headers (names lower-case); return its
    timestamp, or raise ``SignatureError``."""
    message_id = received.get(ID_HEADER)
    timestamp_text = received.get(TIMESTAMP_HEADER)
    signatures = received.get(SIGNATURE_HEADER)
    if not message_id or not timestamp_text or not signatures:
        raise SignatureError("webhook-id, webhook-timestamp and webhook-signature are needed")
    try:
        timestamp = int(timestamp_text)
    except ValueError:
        raise SignatureError("webhook-timestamp is not an integer") from None
    expected = signature(secret, message_id, timestamp, body)
    if not any(hmac.compare_digest(expected, s) for s in signatures.split(" ")):
        raise SignatureError("no signature matches the payload (wrong secret, or altered body)")
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        raise SignatureError(
            f"the signature is {abs(current - timestamp):.0f} s old, over the {tolerance_s:g} s "
            "tolerance (a replay, or a clock off)"
        )
    return timestamp
