"""OAuth2/OIDC bearer JWTs: verify a token from a configured issuer, map its claims.

The order matters for safety: the unverified ``iss`` claim only *selects* an
issuer's configuration; the token's ``alg`` must be on that issuer's
allow-list (asymmetric algorithms only, so ``none`` and HMAC never verify,
and an RSA public key can never be used as an HMAC secret); the key comes from
the issuer's JWKS by ``kid`` and is bound to one algorithm; then PyJWT checks
signature, issuer, audience and ``exp``/``nbf``/``iat`` (with leeway), and
``exp`` is required. Only after all of that are claims read.

Every rejection is an ``AuthenticationFailed`` (401, ``authentication_error``)
with a stable ``code`` per reason and a message that echoes nothing from the
token. No keys at all (identity provider unreachable since start-up) is a 503.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jwt as pyjwt

from lockgate.config.spec import ClaimMapping, JwtIssuerSpec
from lockgate.errors import AuthenticationFailed
from lockgate.tenancy.jwt_keys import MAX_KID_CHARS, JwksCache, SigningKeysUnavailable

__all__ = [
    "AlgorithmNotAllowed",
    "InvalidAudience",
    "InvalidClaim",
    "InvalidIssuer",
    "InvalidSignature",
    "InvalidToken",
    "JwtIdentity",
    "JwtVerifier",
    "MalformedToken",
    "MissingClaim",
    "SigningKeysUnavailable",
    "TokenExpired",
    "TokenNotYetValid",
    "UnknownSigningKey",
]

MAX_TOKEN_CHARS = 16 * 1024
# Defence in depth: the config spec already refuses anything else.
_ASYMMETRIC = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
_ROLE_SEPARATORS = re.compile(r"[\s,]+")


# -- errors ---------------------------------------------------------------------
class InvalidToken(AuthenticationFailed):
    code = "invalid_token"
    reason = "the bearer token is not valid"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.reason)


class MalformedToken(InvalidToken):
    code = "malformed_token"
    reason = "the bearer token is not a well-formed signed JWT"


class TokenExpired(InvalidToken):
    code = "token_expired"
    reason = "the bearer token has expired"


class TokenNotYetValid(InvalidToken):
    code = "token_not_yet_valid"
    reason = "the bearer token is not valid yet (nbf or iat is in the future)"


class InvalidAudience(InvalidToken):
    code = "invalid_audience"
    reason = "the bearer token was not issued for this gateway (audience)"


class InvalidIssuer(InvalidToken):
    code = "invalid_issuer"
    reason = "the bearer token's issuer is not trusted"


class InvalidSignature(InvalidToken):
    code = "invalid_signature"
    reason = "the bearer token's signature does not verify"


class AlgorithmNotAllowed(InvalidToken):
    code = "algorithm_not_allowed"
    reason = "the bearer token's signing algorithm is not accepted for its issuer"


class UnknownSigningKey(InvalidToken):
    code = "unknown_signing_key"
    reason = "the bearer token is signed with a key its issuer does not publish"


class MissingClaim(InvalidToken):
    code = "missing_claim"

    def __init__(self, claim: str) -> None:
        super().__init__(f"the bearer token has no {claim!r} claim")


class InvalidClaim(InvalidToken):
    code = "invalid_claim"

    def __init__(self, claim: str) -> None:
        super().__init__(f"the bearer token's {claim!r} claim has an unusable value")


# -- identity -------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class JwtIdentity:
    """Who a verified token speaks for. ``claims`` holds every verified claim."""

    issuer: str
    subject: str
    organization_id: str | None
    project_id: str | None
    roles: tuple[str, ...]
    expires_at: datetime
    claims: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Issuer:
    spec: JwtIssuerSpec
    algorithms: frozenset[str]
    keys: JwksCache


class JwtVerifier:
    """Verifies bearer JWTs from the configured issuers. Build once at start-up.

    ``min_refetch_interval_s`` bounds how often an unknown ``kid`` (or a failed
    fetch) may trigger a JWKS fetch; ``clock`` is monotonic seconds (tests).
    Raises ValueError for an unusable configuration.
    """

    def __init__(
        self,
        issuers: Sequence[JwtIssuerSpec],
        *,
        min_refetch_interval_s: float = 30.0,
        fetch_timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._issuers: dict[str, _Issuer] = {}
        for spec in issuers:
            if spec.issuer in self._issuers:
                raise ValueError(f"JWT issuer {spec.issuer!r} is configured twice")
            refused = sorted(set(spec.algorithms) - _ASYMMETRIC)
            if refused:
                raise ValueError(f"JWT issuer {spec.issuer!r}: algorithms not allowed: {refused}")
            keys = JwksCache(
                spec,
                min_refetch_interval_s=min_refetch_interval_s,
                fetch_timeout_s=fetch_timeout_s,
                clock=clock,
            )
            self._issuers[spec.issuer] = _Issuer(spec, frozenset(spec.algorithms), keys)

    @property
    def issuers(self) -> tuple[str, ...]:
        return tuple(self._issuers)

    async def verify(self, token: str) -> JwtIdentity:
        """The identity in ``token``.

        Raises an ``InvalidToken`` subclass (401), or ``SigningKeysUnavailable``
        (503) if the issuer's keys could never be loaded.
        """
        if len(token) > MAX_TOKEN_CHARS or token.count(".") != 2:
            raise MalformedToken
        try:
            # Unverified: only to choose the issuer and key. Nothing here is trusted yet.
            unverified = pyjwt.decode_complete(token, options={"verify_signature": False})
        except pyjwt.PyJWTError:
            raise MalformedToken from None
        header, payload = unverified["header"], unverified["payload"]
        claimed_issuer = payload.get("iss")
        issuer = self._issuers.get(claimed_issuer) if isinstance(claimed_issuer, str) else None
        if issuer is None:
            raise InvalidIssuer
        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or algorithm not in issuer.algorithms:
            raise AlgorithmNotAllowed
        kid = header.get("kid")
        if kid is not None and not (isinstance(kid, str) and len(kid) <= MAX_KID_CHARS):
            raise MalformedToken
        key = await issuer.keys.key_for(kid, algorithm)
        if key is None:
            raise UnknownSigningKey
        spec = issuer.spec
        try:
            claims = pyjwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=spec.audiences,
                issuer=spec.issuer,
                leeway=spec.leeway_s,
                options={"require": ["exp", "iss", "aud"]},
            )
        except pyjwt.PyJWTError as exc:
            raise _rejection(exc) from None
        return _identity(spec.issuer, spec.claims, claims)


def _rejection(exc: pyjwt.PyJWTError) -> InvalidToken:
    """Our error for PyJWT's (subclasses first: InvalidSignatureError is a DecodeError)."""
    if isinstance(exc, pyjwt.ExpiredSignatureError):
        return TokenExpired()
    if isinstance(exc, pyjwt.ImmatureSignatureError):
        return TokenNotYetValid()
    if isinstance(exc, pyjwt.InvalidAudienceError):
        return InvalidAudience()
    if isinstance(exc, pyjwt.InvalidIssuerError):
        return InvalidIssuer()
    if isinstance(exc, pyjwt.InvalidSignatureError):
        return InvalidSignature()
    if isinstance(exc, pyjwt.InvalidAlgorithmError):
        return AlgorithmNotAllowed()
    if isinstance(exc, pyjwt.MissingRequiredClaimError):
        return InvalidAudience() if exc.claim == "aud" else MissingClaim(exc.claim)
    if isinstance(exc, pyjwt.InvalidIssuedAtError):
        return InvalidClaim("iat")
    if isinstance(exc, pyjwt.exceptions.InvalidSubjectError):
        return InvalidClaim("sub")
    if isinstance(exc, pyjwt.exceptions.InvalidJTIError):
        return InvalidClaim("jti")
    return MalformedToken()


def _identity(issuer: str, mapping: ClaimMapping, claims: dict[str, Any]) -> JwtIdentity:
    subject = _text(claims, mapping.subject)
    if subject is None:
        raise MissingClaim(mapping.subject)
    try:
        expires_at = datetime.fromtimestamp(int(claims["exp"]), UTC)
    except (OverflowError, ValueError, OSError):  # e.g. 1e300: past datetime's range
        raise InvalidClaim("exp") from None
    return JwtIdentity(
        issuer=issuer,
        subject=subject,
        organization_id=_text(claims, mapping.organization),
        project_id=_text(claims, mapping.project),
        roles=_roles(claims, mapping.roles),
        expires_at=expires_at,
        claims=claims,
    )


def _claim(claims: dict[str, Any], name: str) -> Any:
    """A claim by exact name, else by dotted path (``realm_access.roles``).

    Exact names first: namespaced claims are often URLs, which contain dots.
    """
    if name in claims:
        return claims[name]
    node: Any = claims
    for part in name.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _text(claims: dict[str, Any], name: str) -> str | None:
    value = _claim(claims, name)
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # numeric ids are common; normalise to text
    raise InvalidClaim(name)


def _roles(claims: dict[str, Any], name: str) -> tuple[str, ...]:
    """Roles as a JSON list of strings, or one string separated by spaces and/or commas."""
    value = _claim(claims, name)
    if value is None:
        return ()
    if isinstance(value, str):
        items = _ROLE_SEPARATORS.split(value)
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        items = [v.strip() for v in value]
    else:
        raise InvalidClaim(name)
    return tuple(dict.fromkeys(item for item in items if item))
