"""Stage 1 — authenticate: who is calling?

API keys (``Authorization: Bearer lg_…`` or ``x-api-key``) are checked against
the in-process ``KeyCache`` — no database round trip in the steady state —
and bearer JWTs against the configured issuers. The secret is verified before
anything about the key is revealed, so "revoked" or "expired" is only ever
told to someone who holds the real secret.
"""

from __future__ import annotations

import hmac
import math
import time
from collections.abc import Callable
from ipaddress import ip_network
from typing import TYPE_CHECKING, Protocol

from lockgate.admission.policy import TenantSettings
from lockgate.dataplane.context import ANONYMOUS, Principal, RequestContext
from lockgate.errors import AuthenticationFailed
from lockgate.tenancy.key_cache import KeyCache, KeyGrant, Miss
from lockgate.tenancy.keys import hash_secret, parse_key
from lockgate.tenancy.model import KeyStatus, Role, Scope
from lockgate.tenancy.rbac import ROLE_PERMISSIONS, Permission

if TYPE_CHECKING:
    from lockgate.tenancy.jwt import JwtVerifier


class Authenticator(Protocol):
    async def authenticate(self, ctx: RequestContext) -> Principal:
        """Return the caller; raise ``AuthenticationFailed`` if credentials are bad."""
        ...


class AnonymousAuthenticator:
    """For deployments that opt out of authentication (``auth.allow_anonymous``)."""

    async def authenticate(self, ctx: RequestContext) -> Principal:
        return ANONYMOUS


class MissingCredentials(AuthenticationFailed):
    code = "missing_api_key"


class KeyNotUsable(AuthenticationFailed):
    """The secret is right but the key may not be used (revoked, disabled, expired)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


_INVALID = "Incorrect API key provided."
_MAX_CHECKED = 100_000
_INVOKING_ROLES = frozenset(r.value for r in Role if Permission.MODEL_INVOKE in ROLE_PERMISSIONS[r])


class CredentialAuthenticator:
    def __init__(
        self,
        keys: KeyCache,
        pepper: bytes,
        jwt: JwtVerifier | None = None,
        *,
        allow_anonymous: bool = False,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = keys
        self._pepper = pepper
        self._jwt = jwt
        self._allow_anonymous = allow_anonymous
        self._now = wall_clock
        # Per key id: what was derived from the grant object the cache holds now.
        self._checked: dict[str, _CheckedKey] = {}
        self._tenants: dict[tuple[str | None, str | None], TenantSettings] = {}

    async def authenticate(self, ctx: RequestContext) -> Principal:
        headers = ctx.http.headers
        raw = headers.get(b"authorization")
        if raw is not None:
            scheme, _, value = raw.partition(b" ")
            if scheme.lower() != b"bearer" or not value:
                raise AuthenticationFailed("Use 'Authorization: Bearer <API key or token>'.")
            credential = value.strip().decode("latin-1")
        else:
            api_key = headers.get(b"x-api-key")
            if api_key is None:
                if self._allow_anonymous:
                    return ANONYMOUS
                raise MissingCredentials(
                    "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'."
                )
            credential = api_key.strip().decode("latin-1")
        parsed = parse_key(credential)
        if parsed is not None:
            return (await self._check(*parsed)).principal
        if self._jwt is not None and credential.count(".") == 2:
            identity = await self._jwt.verify(credential)
            return Principal(
                id=f"jwt:{identity.issuer}#{identity.subject}",
                is_anonymous=False,
                organization_id=identity.organization_id,
                project_id=identity.project_id,
                can_invoke=bool(_INVOKING_ROLES.intersection(identity.roles)),
                # Counted against its project's and organisation's counters, under the
                # configured defaults (records' own limits need a key's cached grant).
                admission=self._tenant(identity.project_id, identity.organization_id),
            )
        raise AuthenticationFailed(_INVALID)

    def _tenant(self, project_id: str | None, organization_id: str | None) -> TenantSettings:
        """One settings object per tenant, so admission's compiled policies are reused."""
        found = self._tenants.get((project_id, organization_id))
        if found is None:
            if len(self._tenants) >= _MAX_CHECKED:
                self._tenants.clear()
            found = TenantSettings(project_id=project_id, organization_id=organization_id)
            self._tenants[(project_id, organization_id)] = found
        return found

    async def check_api_key(self, key_id: str, secret: str) -> KeyGrant:
        """The key's grant if ``secret`` is right and the key usable now; raises 401s otherwise."""
        return (await self._check(key_id, secret)).grant

    async def _check(self, key_id: str, secret: str) -> _CheckedKey:
        cached = self._keys.peek(key_id)
        grant = await self._keys.get(key_id) if isinstance(cached, Miss) else cached
        if grant is None:
            raise AuthenticationFailed(_INVALID)
        checked = self._checked.get(key_id)
        if checked is None or checked.grant is not grant:  # first use, or reloaded
            if len(self._checked) >= _MAX_CHECKED:
                self._checked.clear()
            checked = self._checked[key_id] = _CheckedKey(grant)
        now = self._now()
        digest = hash_secret(self._pepper, key_id, secret)
        if not hmac.compare_digest(digest, checked.secret_hash):
            previous = checked.previous_hash
            if (
                previous is None
                or checked.previous_expires <= now
                or not hmac.compare_digest(digest, previous)
            ):
                raise AuthenticationFailed(_INVALID)
        if checked.refusal is not None:
            raise KeyNotUsable(*checked.refusal)
        if checked.expires <= now:
            raise KeyNotUsable("api_key_expired", "This API key has expired.")
        return checked


class _CheckedKey:
    """Everything derived from a cached key once, so a request only compares and reads."""

    __slots__ = (
        "expires",
        "grant",
        "previous_expires",
        "previous_hash",
        "principal",
        "refusal",
        "secret_hash",
    )

    def __init__(self, grant: KeyGrant) -> None:
        key = grant.key
        self.grant = grant
        self.secret_hash = key.secret_hash
        self.previous_hash = key.previous_secret_hash
        self.previous_expires = (
            key.previous_expires_at.timestamp() if key.previous_expires_at else 0.0
        )
        self.expires = key.expires_at.timestamp() if key.expires_at else math.inf
        self.refusal: tuple[str, str] | None = None
        if key.status is KeyStatus.REVOKED:
            self.refusal = ("api_key_revoked", "This API key has been revoked.")
        elif key.status is KeyStatus.DISABLED:
            self.refusal = ("api_key_disabled", "This API key is disabled.")
        elif grant.service_account_disabled:
            self.refusal = ("api_key_disabled", "This API key's service account is disabled.")
        self.principal = _principal(grant)


def _principal(grant: KeyGrant) -> Principal:
    key = grant.key
    # Key, project and organisation allow-lists intersect; an empty one restricts nothing.
    models: set[str] | None = None
    for allowed in (
        key.allowed_models,
        grant.project.allowed_models,
        grant.organization.allowed_models,
    ):
        if allowed:
            models = set(allowed) if models is None else models & set(allowed)
    if models is not None and not models:  # the lists do not overlap: nothing is allowed
        models = {""}
    return Principal(
        id=f"api_key:{key.id}",
        is_anonymous=False,
        organization_id=key.organization_id,
        project_id=key.project_id,
        can_invoke=Scope.INFERENCE in key.scopes,
        allowed_models=frozenset(models or ()),
        allowed_networks=tuple(ip_network(c, strict=False) for c in key.allowed_cidrs),
        required_model_tags=frozenset(key.required_model_tags.items()),
        log_prompts=grant.project.log_prompts,
        admission=TenantSettings(
            key_id=key.id,
            project_id=key.project_id,
            organization_id=key.organization_id,
            key=key.limits,
            project=grant.project.limits,
            organization=grant.organization.limits,
            project_models=grant.project.model_limits,
        ),
    )
