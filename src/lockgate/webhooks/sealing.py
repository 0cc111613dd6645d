"""A subscription's signing secret at rest: sealed with the master keyring, bound to its owner.

The associated data names the organisation and the subscription, so a sealed
secret copied into another row (or another tenant's) does not open there.
``cryptography`` (AES-GCM) is imported only when a secret is sealed or opened.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lockgate.tenancy.secretbox import Keyring


def secret_aad(organization_id: str, subscription_id: str) -> bytes:
    from lockgate.tenancy.secretbox import associated_data

    return associated_data("webhook_secret", organization_id, subscription_id)


def seal(keyring: Keyring, organization_id: str, subscription_id: str, secret: str) -> bytes:
    return keyring.encrypt(secret.encode("utf-8"), secret_aad(organization_id, subscription_id))


def unseal(keyring: Keyring, organization_id: str, subscription_id: str, sealed: bytes) -> str:
    """Raises ``SecretBoxError`` for a token that does not open (wrong owner, retired key)."""
    return keyring.decrypt(sealed, secret_aad(organization_id, subscription_id)).decode("utf-8")
