"""Signing keys of one JWT issuer: a JWKS document from a URL or a file, cached.

Keys are loaded lazily by the first token that needs them and then served
from memory. A refresh happens when the cache is older than ``jwks_cache_s``
or when a token names a key id we do not hold (the issuer rotated its keys),
but never more than once per ``min_refetch_interval_s``: a flood of tokens
with made-up key ids costs one fetch per interval, not one per token. A failed
refresh keeps the keys we have, so an identity provider outage does not log
everybody out.

A key is trusted for ``jwks_cache_s`` after the last fetch that published it:
a key the issuer withdrew keeps verifying tokens for at most that long (as it
would have without the refetch), and tokens signed just before a rotation
keep working through it.

Only asymmetric keys are loaded (``oct`` JWKs, i.e. shared secrets, never
are), each bound to one algorithm from the issuer's allow-list that fits its
type and curve, so a token cannot pick how its key is interpreted.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import orjson
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from jwt import PyJWK, PyJWTError

from lockgate.config.spec import JwtIssuerSpec
from lockgate.errors import GatewayError
from lockgate.http.client import Deadlines, Origin, UpstreamError

log = logging.getLogger("lockgate.tenancy.jwt")

MAX_JWKS_BYTES = 256 * 1024
MAX_KID_CHARS = 256
_MIN_RSA_BITS = 2048
_RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_EC_ALGORITHMS = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
_OKP_CURVES = frozenset({"Ed25519", "Ed448"})

_PRINTABLE = re.compile(r"[!-~]+", re.ASCII)  # nothing that could split the request line

KeyRef = tuple[str | None, str]  # (kid, algorithm)


class SigningKeysUnavailable(GatewayError):
    """No keys for the issuer could be loaded yet: the gateway's problem, not the caller's.

    A 503 rather than a 401, so clients retry instead of discarding a good token.
    """

    status = 503
    code = "identity_provider_unavailable"


class JwksError(Exception):
    """A JWKS document could not be fetched or used; the message is safe to log."""


def _algorithms_for(jwk: dict[str, Any], allowed: Collection[str]) -> list[str]:
    kty, crv, declared = (jwk.get(name) for name in ("kty", "crv", "alg"))
    if not all(v is None or isinstance(v, str) for v in (kty, crv, declared)):
        return []  # e.g. a list where a name belongs: unusable, and must not raise
    if kty == "RSA":
        family = set(_RSA_ALGORITHMS)
    elif kty == "EC" and crv in _EC_ALGORITHMS:
        family = {_EC_ALGORITHMS[crv]}
    elif kty == "OKP" and crv in _OKP_CURVES:
        family = {"EdDSA"}
    else:  # 'oct' (a shared secret) and anything unknown is never a signing key here
        return []
    if declared is not None:
        family &= {declared}
    return sorted(family.intersection(allowed))


def parse_jwks(document: bytes, allowed: Collection[str]) -> dict[KeyRef, PyJWK]:
    """Usable verification keys of a JWKS document, by (kid, algorithm).

    Members that are not signature keys, do not fit an allowed algorithm, or
    are RSA keys under 2048 bits are skipped. Raises ``JwksError`` if the
    document is not a JWKS or has no usable key.
    """
    try:
        parsed = orjson.loads(document)
    except orjson.JSONDecodeError:
        raise JwksError("JWKS document is not valid JSON") from None
    members = parsed.get("keys") if isinstance(parsed, dict) else None
    if not isinstance(members, list):
        raise JwksError("JWKS document has no 'keys' list")
    keys: dict[KeyRef, PyJWK] = {}
    for jwk in members:
        if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
            continue
        kid = jwk.get("kid")
        if kid is not None and not (isinstance(kid, str) and 0 < len(kid) <= MAX_KID_CHARS):
            continue
        for algorithm in _algorithms_for(jwk, allowed):
            try:
                key = PyJWK(jwk, algorithm=algorithm)
            except PyJWTError:
                continue
            if isinstance(key.key, RSAPublicKey) and key.key.key_size < _MIN_RSA_BITS:
                continue
            keys[(kid, algorithm)] = key
    if not keys:
        raise JwksError(f"JWKS has no usable key for algorithms {', '.join(sorted(allowed))}")
    return keys


@dataclass(slots=True)
class _Entry:
    key: PyJWK
    last_seen: float  # clock time of the last successful load that published it


class JwksCache:
    """The cached keys of one issuer. Safe for concurrent use within one event loop."""

    def __init__(
        self,
        spec: JwtIssuerSpec,
        *,
        min_refetch_interval_s: float = 30.0,
        fetch_timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.issuer = spec.issuer
        self._algorithms = frozenset(spec.algorithms)
        self._ttl_s = spec.jwks_cache_s
        self._min_interval_s = min(min_refetch_interval_s, spec.jwks_cache_s)
        self._clock = clock
        self._source: _Source = (
            _UrlSource(spec.jwks_url, fetch_timeout_s)
            if spec.jwks_url is not None
            else _FileSource(spec.jwks_file or "")
        )
        self._entries: dict[KeyRef, _Entry] = {}
        self._loaded_at: float | None = None
        self._last_attempt_at: float | None = None
        self._attempts = 0
        self._lock = asyncio.Lock()

    async def key_for(self, kid: str | None, algorithm: str) -> PyJWK | None:
        """The key for a token's ``kid`` and (allow-listed) ``alg``; None if there is none.

        May refresh the cache first (rate-limited). Raises ``SigningKeysUnavailable``
        if no keys have ever been loaded for this issuer.
        """
        now = self._clock()
        key = self._lookup(kid, algorithm, now)
        is_fresh = self._loaded_at is not None and now - self._loaded_at < self._ttl_s
        # A stale hit is good enough while another request is already refreshing.
        if key is not None and (is_fresh or self._lock.locked()):
            return key
        seen = self._attempts
        async with self._lock:
            # Requests that queued behind a refresh use its result rather than repeat it.
            if self._attempts == seen and self._may_fetch(self._clock()):
                await self._refresh()
        if self._loaded_at is None:
            raise SigningKeysUnavailable(
                "the identity provider's signing keys are unavailable; try again later"
            )
        return self._lookup(kid, algorithm, self._clock())

    def _may_fetch(self, now: float) -> bool:
        last = self._last_attempt_at
        return last is None or now - last >= self._min_interval_s

    def _lookup(self, kid: str | None, algorithm: str, now: float) -> PyJWK | None:
        if kid is not None:
            entry = self._entries.get((kid, algorithm))
        else:  # a token without a kid is accepted only when one key fits its algorithm
            fits = [e for (_, alg), e in self._entries.items() if alg == algorithm]
            entry = fits[0] if len(fits) == 1 else None
        if entry is None:
            return None
        is_withdrawn = self._loaded_at is not None and entry.last_seen < self._loaded_at
        if is_withdrawn and now - entry.last_seen >= self._ttl_s:
            return None
        return entry.key

    async def _refresh(self) -> None:
        previous_attempt_at, self._last_attempt_at = self._last_attempt_at, self._clock()
        try:
            keys = parse_jwks(await self._source.load(), self._algorithms)
        except JwksError as exc:
            self._attempts += 1
            held = "keeping cached keys" if self._entries else "no keys cached"
            log.warning("JWKS refresh for issuer %s failed (%s); %s", self.issuer, exc, held)
            return
        except asyncio.CancelledError:
            # The caller went away mid-fetch: let the next request try again at once.
            self._last_attempt_at = previous_attempt_at
            raise
        now = self._clock()
        kept = {
            ref: entry
            for ref, entry in self._entries.items()
            if ref not in keys and now - entry.last_seen < self._ttl_s
        }
        self._entries = kept | {ref: _Entry(key, now) for ref, key in keys.items()}
        self._loaded_at = now
        self._attempts += 1


class _Source(Protocol):
    async def load(self) -> bytes:
        """The JWKS document; raises ``JwksError`` (with a loggable message) on failure."""
        ...


class _FileSource:
    """A JWKS file (air-gapped sites); re-read like a URL, so replacing it rotates keys."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    async def load(self) -> bytes:
        return await asyncio.to_thread(self._read)

    def _read(self) -> bytes:
        try:
            with self.path.open("rb") as file:
                document = file.read(MAX_JWKS_BYTES + 1)
        except OSError as exc:
            raise JwksError(f"cannot read JWKS file {self.path}: {exc.strerror}") from None
        if len(document) > MAX_JWKS_BYTES:
            raise JwksError(f"JWKS file is larger than {MAX_JWKS_BYTES} bytes")
        return document


class _UrlSource:
    """A JWKS URL fetched with the gateway's own HTTP client (no redirects followed)."""

    def __init__(self, url: str, timeout_s: float) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.username:
            raise ValueError(f"jwks_url must be an http(s) URL without credentials: {url!r}")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if _PRINTABLE.fullmatch(target + parts.netloc) is None:
            raise ValueError(f"jwks_url must be printable ASCII without spaces: {url!r}")
        self.request = (
            f"GET {target} HTTP/1.1\r\nhost: {parts.netloc}\r\n"
            "accept: application/jwk-set+json, application/json\r\n"
            "user-agent: lockgate\r\nconnection: close\r\n\r\n"
        ).encode("ascii")
        self.timeout_s = timeout_s
        self.tls: ssl.SSLContext | None = None

    async def load(self) -> bytes:
        if self.scheme == "https" and self.tls is None:
            # Loading the system trust store reads files: keep it off the event loop.
            self.tls = await asyncio.to_thread(ssl.create_default_context)
        origin = Origin(self.scheme, self.host, self.port, tls=self.tls)
        t = self.timeout_s
        try:
            async with asyncio.timeout(t):
                response = await origin.send(self.request, Deadlines(t, t, t, t))
                try:
                    if response.status != 200:
                        raise JwksError(f"JWKS endpoint answered HTTP {response.status}")
                    document = await response.read_body(MAX_JWKS_BYTES)
                finally:
                    response.abort()  # 'connection: close' anyway: nothing to pool
        except TimeoutError:
            raise JwksError(f"JWKS fetch timed out after {t:g}s") from None
        except UpstreamError as exc:
            raise JwksError(f"JWKS fetch failed: {exc}") from None
        finally:
            origin.close()
        return document
