"""Who is calling the admin API, and what they hold: API keys with the admin scope
(acting as their service account) or bearer JWTs (roles from claims)."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from lockgate.controlplane.actions import Actor
from lockgate.controlplane.admin.errors import AdminNotFound
from lockgate.dataplane.pipeline.authenticate import CredentialAuthenticator, MissingCredentials
from lockgate.errors import AuthenticationFailed, PermissionDenied
from lockgate.store.store import Store
from lockgate.tenancy.jwt import JwtVerifier
from lockgate.tenancy.keys import parse_key
from lockgate.tenancy.model import PrincipalKind, Role, Scope
from lockgate.tenancy.rbac import Grant, Permission, is_allowed


@dataclass(frozen=True, slots=True)
class AdminPrincipal:
    actor: Actor
    grants: tuple[Grant, ...]

    @property
    def is_superadmin(self) -> bool:
        return any(g.role is Role.SUPERADMIN for g in self.grants)

    def allows(
        self, permission: Permission, organization_id: str | None, project_id: str | None = None
    ) -> bool:
        return is_allowed(
            self.grants, permission, organization_id=organization_id, project_id=project_id
        )

    def require_any_in(self, organization_id: str) -> None:
        """404 unless the caller holds some role in the organisation: another tenant's
        objects are not theirs to learn about, not even that they exist."""
        if not any(
            g.role is Role.SUPERADMIN or g.organization_id == organization_id for g in self.grants
        ):
            raise AdminNotFound(f"organization {organization_id!r} not found")

    def require(
        self, permission: Permission, organization_id: str | None, project_id: str | None = None
    ) -> None:
        """Allow, or refuse: 404 outside the caller's organisations, 403 inside them."""
        if self.allows(permission, organization_id, project_id):
            return
        if organization_id is not None:
            self.require_any_in(organization_id)
        raise PermissionDenied(f"You lack the '{permission.value}' permission here.")


class AdminAuthenticator:
    def __init__(
        self, store: Store, keys: CredentialAuthenticator, jwt: JwtVerifier | None
    ) -> None:
        self._store = store
        self._keys = keys
        self._jwt = jwt

    async def __call__(self, request: Request) -> AdminPrincipal:
        header = request.headers.get("authorization", "")
        scheme, _, credential = header.partition(" ")
        if not header:
            raise MissingCredentials("Send 'Authorization: Bearer <admin API key or token>'.")
        if scheme.lower() != "bearer" or not credential:
            raise AuthenticationFailed("Use 'Authorization: Bearer <admin API key or token>'.")
        client = request.client.host if request.client else None
        request_id = request.headers.get("x-request-id")
        credential = credential.strip()
        parsed = parse_key(credential)
        if parsed is not None:
            grant = await self._keys.check_api_key(*parsed)
            key = grant.key
            if Scope.ADMIN not in key.scopes:
                raise PermissionDenied("This API key does not have the 'admin' scope.")
            grants: tuple[Grant, ...] = ()
            if key.service_account_id is not None:
                account = await self._store.service_accounts.get(
                    key.service_account_id, organization_id=key.organization_id
                )
                if account.is_disabled:
                    raise PermissionDenied("This key's service account is disabled.")
                bindings = await self._store.role_bindings.list_for_subject(
                    PrincipalKind.SERVICE_ACCOUNT, account.id, organization_id=None
                )
                grants = tuple(Grant(b.role, b.organization_id, b.project_id) for b in bindings)
            return AdminPrincipal(Actor(f"api_key:{key.id}", client, request_id), grants)
        if self._jwt is not None and credential.count(".") == 2:
            identity = await self._jwt.verify(credential)
            roles = [Role(r) for r in identity.roles if r in Role._value2member_map_]
            grants = tuple(
                Grant(r, None)
                if r is Role.SUPERADMIN
                else Grant(r, identity.organization_id, identity.project_id)
                for r in roles
                if r is Role.SUPERADMIN or identity.organization_id is not None
            )
            actor = Actor(f"jwt:{identity.issuer}#{identity.subject}", client, request_id)
            return AdminPrincipal(actor, grants)
        raise AuthenticationFailed("Incorrect API key provided.")
