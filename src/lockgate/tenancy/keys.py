"""API key format and hashing: ``lg_<key_id>_<secret>``.

The key id (16 base32 characters, 80 random bits) is public: it names the key
in listings, logs and the audit trail, and it is how the store finds the row.
The secret (52 base32 characters, 256 random bits) is shown once, at
creation, and is never stored; the store keeps only the keyed hash
``BLAKE2b-256(key=pepper, person="lockgate-apikey", key_id ":" secret)``.

Why a fast keyed hash and not bcrypt/argon2: slow hashes exist to make
guessing *low-entropy* passwords expensive. A 256-bit random secret cannot be
guessed at any speed, so a slow hash would only burn CPU on every request (and
invite a cheap denial of service) without adding safety. What the keyed hash adds is
the pepper: a server secret kept *outside* the database (environment or a
mounted file), so a leaked database dump or backup alone does not even let an
attacker confirm a candidate key offline. Hashing the key id together with the
secret binds them: a secret copied onto another key's row does not verify.

Rotating the pepper invalidates every stored hash (the secret is needed to
rehash), so it means reissuing keys; keep the pepper as stable as the keys.

Why keyed BLAKE2b rather than HMAC-SHA-256: both are standard MACs (BLAKE2's
keyed mode is specified in RFC 7693 as a MAC, no HMAC construction needed),
and BLAKE2b costs ~0.6 µs per check in CPython against ~1.7 µs for HMAC
through OpenSSL — this runs on every request.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import string

from lockgate.config.runtime import read_secret
from lockgate.config.spec import SecretRef

KEY_PREFIX = "lg_"
KEY_ID_CHARS = 16
SECRET_CHARS = 52
KEY_CHARS = len(KEY_PREFIX) + KEY_ID_CHARS + 1 + SECRET_CHARS  # 72
MIN_PEPPER_BYTES = 32
_BLAKE2B_MAX_KEY = 64
_PERSON = b"lockgate-apikey"  # domain separation from any other use of the pepper
DEFAULT_PEPPER_ENV = "LOCKGATE_API_KEY_PEPPER"

# 32 bytes are 256 bits: 51 full base32 characters plus one carrying a single
# bit, so the last character is 'a' (0) or 'q' (16). Accepting only that
# canonical form means exactly one string per secret.
_KEY = re.compile(r"lg_([a-z2-7]{16})_([a-z2-7]{51}[aq])", re.ASCII)
_KEY_ID = re.compile(r"[a-z2-7]{16}", re.ASCII)


def _base32(raw: bytes) -> str:
    return base64.b32encode(raw).decode("ascii").rstrip("=").lower()


def generate_key() -> tuple[str, str, str]:
    """A fresh key: ``(key_id, full_key_string, secret)``.

    Show ``full_key_string`` to the caller once; store ``key_id`` and
    ``hash_secret(pepper, key_id, secret)``; forget the rest.
    """
    key_id = _base32(secrets.token_bytes(10))  # 80 bits -> exactly 16 characters
    secret = _base32(secrets.token_bytes(32))  # 256 bits -> 52 characters
    return key_id, f"{KEY_PREFIX}{key_id}_{secret}", secret


def parse_key(presented: str) -> tuple[str, str] | None:
    """Split a presented key into ``(key_id, secret)``; None if it is not one of ours.

    The check is a full match of a length-bounded pattern, done before any
    lookup, so garbage, oversized input and injection attempts never reach
    the store. It says nothing about whether the key exists.
    """
    if len(presented) != KEY_CHARS:
        return None
    match = _KEY.fullmatch(presented)
    if match is None:
        return None
    return match.group(1), match.group(2)


def is_key_id(value: str) -> bool:
    """Whether ``value`` has the shape of a key id (for admin API path parameters)."""
    return len(value) == KEY_ID_CHARS and _KEY_ID.fullmatch(value) is not None


def display_prefix(key_id: str) -> str:
    """How listings show a key: its public part, never any of the secret."""
    return f"{KEY_PREFIX}{key_id}_…"


def hash_secret(pepper: bytes, key_id: str, secret: str) -> bytes:
    """Keyed BLAKE2b-256 of ``key_id ":" secret`` under the server pepper (>= 32 bytes)."""
    if len(pepper) < MIN_PEPPER_BYTES:
        raise ValueError(f"the API key pepper must be at least {MIN_PEPPER_BYTES} bytes")
    if len(pepper) > _BLAKE2B_MAX_KEY:  # BLAKE2b keys are at most 64 bytes
        pepper = hashlib.blake2b(pepper, person=_PERSON).digest()
    message = f"{key_id}:{secret}".encode("ascii")
    return hashlib.blake2b(message, key=pepper, digest_size=32, person=_PERSON).digest()


def verify_secret(pepper: bytes, key_id: str, secret: str, stored_hash: bytes) -> bool:
    """Whether ``secret`` belongs to ``key_id``; compared in constant time."""
    return hmac.compare_digest(hash_secret(pepper, key_id, secret), stored_hash)


def decode_pepper(text: str) -> bytes:
    """Pepper bytes from text: ``hex:…``, ``base64:…``, or either without a prefix.

    Without a prefix, an even-length all-hex string is hex, anything else
    base64 (standard or URL-safe alphabet). Raises ValueError that never
    contains the value.
    """
    text = text.strip()
    kind, has_prefix, body = text.partition(":")
    if not has_prefix:
        is_hex = len(text) % 2 == 0 and all(c in string.hexdigits for c in text)
        kind, body = ("hex" if is_hex else "base64"), text
    if kind not in ("hex", "base64"):
        raise ValueError("unknown pepper encoding prefix: use hex: or base64:")
    try:
        if kind == "hex":
            raw = bytes.fromhex(body)
        else:
            body = body.replace("-", "+").replace("_", "/")
            raw = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"the API key pepper is not valid {kind}") from None
    if len(raw) < MIN_PEPPER_BYTES:
        raise ValueError(
            f"the API key pepper is {len(raw)} bytes; at least {MIN_PEPPER_BYTES} are required "
            "(generate one with: openssl rand -base64 32)"
        )
    return raw


def load_pepper(ref: SecretRef | None = None) -> bytes:
    """Read the pepper from ``ref`` (default: env ``LOCKGATE_API_KEY_PEPPER``) at start-up.

    Raises ValueError naming the source and the problem, never the value.
    """
    source = ref if ref is not None else SecretRef(env=DEFAULT_PEPPER_ENV)
    where = f"environment variable {source.env}" if source.env else f"file {source.file}"
    try:
        return decode_pepper(read_secret(source))
    except ValueError as exc:
        raise ValueError(f"API key pepper ({where}): {exc}") from None
