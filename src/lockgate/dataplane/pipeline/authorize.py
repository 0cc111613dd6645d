"""Stage 2 — authorise: may this principal use this model, from here?

Runs after the model is resolved (so an unknown model is a 404 only for
authenticated callers) and before any capacity is reserved. Reads only what
the authenticate stage put on the principal: no I/O.
"""

from __future__ import annotations

from ipaddress import ip_address
from typing import Protocol

from lockgate.dataplane.context import RequestContext
from lockgate.errors import PermissionDenied


class Authorizer(Protocol):
    def authorize(self, ctx: RequestContext) -> None:
        """Return if allowed; raise ``PermissionDenied`` otherwise."""
        ...


class AllowAll:
    def authorize(self, ctx: RequestContext) -> None:
        return None


class Denied(PermissionDenied):
    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message, param=param)
        self.code = code


class PolicyAuthorizer:
    """Scope, model allow-lists and network conditions carried by the principal."""

    def authorize(self, ctx: RequestContext) -> None:
        principal = ctx.principal
        if principal.is_anonymous:
            return
        if not principal.can_invoke:
            raise Denied(
                "scope_not_allowed", "This credential may not call models (missing scope or role)."
            )
        allowed = principal.allowed_models
        model = ctx.model
        if (
            allowed
            and model is not None
            and model.name not in allowed
            and ctx.requested_model not in allowed
        ):
            raise Denied(
                "model_not_allowed",
                f"This API key may not use the model '{ctx.requested_model}'.",
                param="model",
            )
        if principal.required_model_tags and model is not None:
            missing = principal.required_model_tags - model.tags
            if missing:
                raise Denied(
                    "model_not_allowed",
                    f"This API key may only use models tagged "
                    f"{', '.join(f'{k}={v}' for k, v in sorted(principal.required_model_tags))}.",
                    param="model",
                )
        if principal.allowed_networks:
            try:
                address = ip_address(ctx.client_ip)
            except ValueError:
                address = None
            if address is None or not any(address in n for n in principal.allowed_networks):
                raise Denied(
                    "network_not_allowed",
                    "This API key may not be used from your network address.",
                )
