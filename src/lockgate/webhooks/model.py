"""Webhook records and the rules on them: event types, subscriptions, deliveries, attempts.

Pure: the store maps rows onto these, the admin API renders them, the
deliverer acts on them. A subscription's secret is held sealed (ciphertext
from the master keyring) everywhere but in the deliverer, for the moment it
signs, and in the one answer that creates or rotates it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

MAX_URL_LENGTH = 2048
_PRINTABLE = re.compile(r"[\x21-\x7e]+")


class EventType(StrEnum):
    BUDGET_THRESHOLD_CROSSED = "budget.threshold_crossed"
    USAGE_SUMMARY_HOURLY = "usage.summary.hourly"
    USAGE_SUMMARY_DAILY = "usage.summary.daily"


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # waiting for its (next) attempt
    DELIVERED = "delivered"  # a 2xx answer
    FAILED = "failed"  # max attempts used up (replay from the admin API to try again)


class InvalidWebhookUrl(ValueError):
    """A subscription URL Lockgate refuses to call."""


def check_url(url: str) -> str:
    """``url`` if it is an absolute http(s) URL without credentials or fragment.

    Webhook URLs are supplied by tenants and operators, and the gateway will POST
    to them from inside its network (SSRF): other schemes (file:, gopher:, …) are
    refused here; which hosts and networks may be reached is for the deployment's
    egress policy to decide (see docs/webhooks.md).
    """
    if len(url) > MAX_URL_LENGTH or _PRINTABLE.fullmatch(url) is None:
        raise InvalidWebhookUrl(
            f"the URL must be printable ASCII without spaces, at most {MAX_URL_LENGTH} chars"
        )
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise InvalidWebhookUrl("the URL must start with http:// or https://")
    if not parts.hostname:
        raise InvalidWebhookUrl("the URL must name a host")
    if parts.username is not None or parts.password is not None:
        raise InvalidWebhookUrl("the URL must not carry credentials (the payload is signed)")
    if parts.fragment:
        raise InvalidWebhookUrl("the URL must not have a fragment")
    try:
        _ = parts.port
    except ValueError:
        raise InvalidWebhookUrl("the URL's port is not a number from 0 to 65535") from None
    return url


@dataclass(frozen=True, slots=True)
class Subscription:
    id: str
    organization_id: str
    url: str
    event_types: tuple[EventType, ...]
    description: str
    is_enabled: bool
    secret: bytes  # sealed
    previous_secret: bytes | None  # sealed; still signed with until previous_expires_at
    previous_expires_at: datetime | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Event:
    id: str
    organization_id: str
    type: EventType
    dedupe_key: str
    payload: dict[str, Any]  # the ``data`` of the body sent
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Delivery:
    id: str
    organization_id: str
    subscription_id: str
    event_id: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime
    last_status_code: int | None
    last_error: str | None
    replay_of: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try of a delivery, as the delivery log shows it."""

    delivery_id: str
    attempt: int  # 1, 2, …
    started_at: datetime
    status_code: int | None  # None: no HTTP answer (connect error, timeout)
    latency_ms: float
    error: str | None
