"""Admin actions: each change and its audit entry commit together, then caches hear of it.

The admin API, the CLI and the demo all go through ``AdminActions``, so there
is one place where a key is created, rotated or revoked, a project deleted,
a service account disabled. Authorisation (who may call them) is the
caller's job; these functions record who did it.

Every action is one ``store.transaction()``: its writes, then its audit
entry, last (the store refuses writes after it). Ordering matters for
revocation: the database change commits first, then the invalidation is
published, so a replica that reloads a key after hearing the message reads
the new state. If publishing fails the change stands and the caller gets
``InvalidationUnavailable`` (caches then expire by TTL).

The actions are grouped by what they act on (``tenants``, ``principals``,
``keys``, ``secrets``); ``AdminActions`` is all of them on one object.
"""

from __future__ import annotations

from lockgate.controlplane.actions.base import (
    SYSTEM,
    TOPIC_API_KEY,
    TOPIC_ORGANIZATION,
    TOPIC_PROJECT,
    Actor,
    key_summary,
    organization_summary,
    project_summary,
    service_account_summary,
    user_summary,
)
from lockgate.controlplane.actions.budgets import BudgetActions
from lockgate.controlplane.actions.idempotency import IdempotentRequest
from lockgate.controlplane.actions.keys import KeyActions, created_response
from lockgate.controlplane.actions.principals import PrincipalActions
from lockgate.controlplane.actions.secrets import SecretActions
from lockgate.controlplane.actions.tenants import TenantActions
from lockgate.controlplane.actions.webhooks import WebhookActions


class AdminActions(
    TenantActions, PrincipalActions, KeyActions, SecretActions, BudgetActions, WebhookActions
):
    """Every admin action; built once per process with the store, bus, pepper and
    (optionally) the master keyring."""


__all__ = [
    "SYSTEM",
    "TOPIC_API_KEY",
    "TOPIC_ORGANIZATION",
    "TOPIC_PROJECT",
    "Actor",
    "AdminActions",
    "IdempotentRequest",
    "created_response",
    "key_summary",
    "organization_summary",
    "project_summary",
    "service_account_summary",
    "user_summary",
]
