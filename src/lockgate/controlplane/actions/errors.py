"""Refusals of admin actions that are neither "not found" nor a store conflict.

They are ``GatewayError``s, so the admin API renders them in the one error
shape; the operator commands print their message and exit 2 (bad input) or 1.
"""

from __future__ import annotations

from lockgate.errors import ClientError


class OutsideAllowedModels(ClientError):
    """An allow-list names models its parent (organisation or project) does not allow."""

    status = 422
    code = "outside_allowed_models"


class IdempotencyKeyReused(ClientError):
    """The Idempotency-Key was used before, by the same caller, for a different request."""

    status = 422
    code = "idempotency_key_reused"


class IdempotencyReplayUnavailable(ClientError):
    """The request was done before, but its response (which held a secret) was not kept."""

    status = 409
    code = "idempotency_replay_unavailable"


class MasterKeyNotConfigured(ClientError):
    """Secrets at rest need LOCKGATE_MASTER_KEYS, which this deployment does not set."""

    status = 409
    code = "master_key_not_configured"
