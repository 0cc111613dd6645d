"""Upstream credentials encrypted at rest: AES-256-GCM under a versioned keyring.

A token is self-describing::

    0x01 | key version (uint32, big-endian) | nonce (12 random bytes) | ciphertext + tag (16)

The format byte and key version are authenticated together with the caller's
associated data (AAD), so neither can be altered without decryption failing.
The AAD names the owner of the secret (e.g. ``associated_data("deployment",
org_id, name)``): a ciphertext copied into another row, or another tenant's
row, does not decrypt there. Random 96-bit nonces are safe for far more
encryptions than a credential store performs under one key (NIST's 2**32).

Rotating the master key, without downtime:

1. Generate a key and add it as a new version, first in the list so it becomes
   current: ``LOCKGATE_MASTER_KEYS="2:<new>,1:<old>"``. Restart or reload.
   New writes use version 2; version 1 tokens still decrypt.
2. Re-encrypt everything: for each stored token where ``needs_rotation(token)``,
   write back ``reencrypt(token, aad)``.
3. Once nothing needs rotation, drop the old version: ``"2:<new>"``.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
import struct
from collections.abc import Mapping
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

FORMAT_V1 = 0x01
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
DEFAULT_ENV = "LOCKGATE_MASTER_KEYS"
_HEADER = struct.Struct(">BI")  # format byte, key version
_MIN_TOKEN = _HEADER.size + NONCE_BYTES + TAG_BYTES
_MAX_VERSION = 2**32 - 1
_VERSION = re.compile(r"[0-9]{1,10}", re.ASCII)


class SecretBoxError(Exception):
    """Base for secretbox failures. Messages never include keys, plaintext or ciphertext."""


class KeyringError(SecretBoxError, ValueError):
    """The keyring configuration is invalid (raised at start-up)."""


class UnknownKeyVersion(SecretBoxError):
    """The token was encrypted under a key version this keyring does not hold."""

    def __init__(self, version: int) -> None:
        super().__init__(f"no master key with version {version} (was it retired too early?)")
        self.version = version


class DecryptionFailed(SecretBoxError):
    """Not a valid token: malformed, tampered with, or bound to other associated data."""


def associated_data(*parts: str) -> bytes:
    """Unambiguous AAD from parts (length-prefixed, so ("a/b", "c") differs from ("a", "b/c"))."""
    out = bytearray()
    for part in parts:
        raw = part.encode("utf-8")
        out += struct.pack(">I", len(raw)) + raw
    return bytes(out)


class Keyring:
    """Master keys by version; encrypts under ``current``, decrypts under any held version."""

    __slots__ = ("_ciphers", "current")

    def __init__(self, keys: Mapping[int, bytes], current: int) -> None:
        if current not in keys:
            raise KeyringError(f"current key version {current} is not in the keyring")
        ciphers: dict[int, AESGCM] = {}
        for version, key in keys.items():
            if not 1 <= version <= _MAX_VERSION:
                raise KeyringError(f"key version {version} is outside 1..{_MAX_VERSION}")
            if len(key) != KEY_BYTES:
                raise KeyringError(f"master key version {version} must be {KEY_BYTES} bytes")
            ciphers[version] = AESGCM(key)
        self._ciphers = ciphers
        self.current = current

    def __repr__(self) -> str:
        return f"Keyring(versions={sorted(self._ciphers)}, current={self.current})"

    @property
    def versions(self) -> tuple[int, ...]:
        return tuple(sorted(self._ciphers))

    # -- loading -------------------------------------------------------------
    @classmethod
    def parse(cls, value: str) -> Keyring:
        """Parse ``"2:<base64 key>,1:<base64 key>"``; the first entry is current.

        Entries may also be separated by newlines; blank lines and ``#``
        comments are ignored (handy in a mounted file).
        """
        entries = [
            entry.strip()
            for line in value.splitlines()
            if not line.strip().startswith("#")
            for entry in line.split(",")
            if entry.strip()
        ]
        if not entries:
            raise KeyringError("no master keys given (expected 'version:base64key,...')")
        keys: dict[int, bytes] = {}
        for position, entry in enumerate(entries, start=1):
            version_text, _, encoded = entry.partition(":")
            if not encoded or _VERSION.fullmatch(version_text.strip()) is None:
                raise KeyringError(f"master key entry {position} is not 'version:base64key'")
            version = int(version_text)
            if version in keys:
                raise KeyringError(f"master key version {version} is given twice")
            keys[version] = _decode_key(encoded.strip(), version)
        return cls(keys, current=int(entries[0].partition(":")[0]))

    @classmethod
    def from_env(cls, name: str = DEFAULT_ENV) -> Keyring:
        value = os.environ.get(name, "")
        if not value.strip():
            raise KeyringError(f"environment variable {name} is not set")
        return cls.parse(value)

    @classmethod
    def from_file(cls, path: str | Path) -> Keyring:
        try:
            value = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise KeyringError(f"cannot read master key file {path}: {exc.strerror}") from None
        return cls.parse(value)

    @staticmethod
    def generate_key() -> bytes:
        """A new random master key (store it base64-encoded)."""
        return secrets.token_bytes(KEY_BYTES)

    # -- using -----------------------------------------------------------------
    def encrypt(self, plaintext: bytes, aad: bytes) -> bytes:
        """Encrypt under the current key; the result names the key version it used."""
        header = _HEADER.pack(FORMAT_V1, self.current)
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self._ciphers[self.current].encrypt(nonce, plaintext, header + aad)
        return header + nonce + sealed

    def decrypt(self, token: bytes, aad: bytes) -> bytes:
        """Plaintext of ``token``; raises ``UnknownKeyVersion`` or ``DecryptionFailed``."""
        version = self.version_of(token)
        cipher = self._ciphers.get(version)
        if cipher is None:
            raise UnknownKeyVersion(version)
        header, nonce = token[: _HEADER.size], token[_HEADER.size : _HEADER.size + NONCE_BYTES]
        try:
            return cipher.decrypt(nonce, token[_HEADER.size + NONCE_BYTES :], header + aad)
        except InvalidTag:
            raise DecryptionFailed(
                "secret does not decrypt: tampered with, or stored under another owner"
            ) from None

    def version_of(self, token: bytes) -> int:
        """The key version a token was encrypted under (not authenticated until decrypt)."""
        if len(token) < _MIN_TOKEN:
            raise DecryptionFailed("not a secretbox token: too short")
        fmt, version = _HEADER.unpack_from(token)
        if fmt != FORMAT_V1:
            raise DecryptionFailed(f"not a secretbox token: unknown format {fmt}")
        return int(version)

    def needs_rotation(self, token: bytes) -> bool:
        """Whether the token is under an older key than the current one."""
        return self.version_of(token) != self.current

    def reencrypt(self, token: bytes, aad: bytes) -> bytes:
        """The same plaintext under the current key (a token already current is returned as is)."""
        if not self.needs_rotation(token):
            self.decrypt(token, aad)  # still prove it is intact and bound to ``aad``
            return token
        return self.encrypt(self.decrypt(token, aad), aad)


def _decode_key(encoded: str, version: int) -> bytes:
    normalised = encoded.replace("-", "+").replace("_", "/")
    try:
        raw = base64.b64decode(normalised + "=" * (-len(normalised) % 4), validate=True)
    except binascii.Error:
        raise KeyringError(f"master key version {version} is not valid base64") from None
    if len(raw) != KEY_BYTES:
        raise KeyringError(
            f"master key version {version} is {len(raw)} bytes; {KEY_BYTES} are required "
            "(generate one with: openssl rand -base64 32)"
        )
    return raw
