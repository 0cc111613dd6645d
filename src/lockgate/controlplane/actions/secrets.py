"""Upstream credentials (a provider's API key, per organisation), encrypted at rest.

The value is encrypted here, under the master keyring's current key and bound
to its owner and name (so a ciphertext copied to another row or tenant does
not decrypt), and is never returned, logged or audited: the audit entry
records the secret's name and the key version only.
"""

from __future__ import annotations

from lockgate.controlplane.actions.base import ActionsBase, Actor, audit
from lockgate.controlplane.actions.errors import MasterKeyNotConfigured
from lockgate.store.repositories.upstream_secrets import UpstreamSecret


def upstream_secret_aad(organization_id: str | None, name: str) -> bytes:
    """The associated data an upstream secret is sealed with (the reader needs the same)."""
    from lockgate.tenancy.secretbox import associated_data

    return associated_data("upstream_secret", organization_id or "deployment", name)


class SecretActions(ActionsBase):
    async def put_upstream_secret(
        self, actor: Actor, organization_id: str, name: str, value: str
    ) -> UpstreamSecret:
        """Create or replace the named secret. Raises ``MasterKeyNotConfigured`` when
        no master key is configured (nothing is stored in the clear, ever)."""
        if self._keyring is None:
            raise MasterKeyNotConfigured(
                "Upstream secrets are stored encrypted, and no master key is configured: "
                "set LOCKGATE_MASTER_KEYS (see docs/configuration.md) and restart."
            )
        version = self._keyring.current
        ciphertext = self._keyring.encrypt(
            value.encode("utf-8"), upstream_secret_aad(organization_id, name)
        )
        async with self._store.transaction() as tx:
            secret = await tx.upstream_secrets.put(
                organization_id=organization_id,
                name=name,
                ciphertext=ciphertext,
                key_version=version,
            )
            await audit(
                tx,
                actor,
                "upstream_secret.put",
                "upstream_secret",
                secret.id,
                organization_id,
                after={"name": name, "key_version": version},
            )
        return secret

    async def delete_upstream_secret(
        self, actor: Actor, organization_id: str, name: str
    ) -> UpstreamSecret:
        """Works without a master key: removing a credential never needs to read it."""
        async with self._store.transaction() as tx:
            secret = await tx.upstream_secrets.get(name, organization_id=organization_id)
            await tx.upstream_secrets.delete(name, organization_id=organization_id)
            await audit(
                tx,
                actor,
                "upstream_secret.delete",
                "upstream_secret",
                secret.id,
                organization_id,
                before={"name": name, "key_version": secret.key_version},
            )
        return secret
