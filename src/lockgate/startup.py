"""Once per machine, before any worker serves: data directory, pepper, migrations, keys.

``serve`` (and the CLI commands that open the store themselves) call these in
the parent process; nothing here is per request.
"""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from lockgate.config import RuntimeConfig
from lockgate.config.spec import SecretRef
from lockgate.store.database import default_url
from lockgate.store.errors import StoreError
from lockgate.tenancy.keys import DEFAULT_PEPPER_ENV, load_pepper

if TYPE_CHECKING:
    from lockgate.tenancy.secretbox import Keyring

log = logging.getLogger("lockgate.startup")

_PEPPER_FILE = "api-key-pepper"


def database_url(config: RuntimeConfig) -> str:
    return config.database_url or default_url(config.server.data_dir)


def is_embedded(config: RuntimeConfig) -> bool:
    return config.database_url is None


def ensure_data_dir(config: RuntimeConfig) -> None:
    """The embedded database, pepper and local bus live here; create it at start-up."""
    Path(config.server.data_dir).mkdir(parents=True, exist_ok=True)


async def prepare_database(config: RuntimeConfig) -> None:
    """Run migrations once, before workers start (safe if several replicas race)."""
    from lockgate.store import migrate  # Alembic: only where migrations run

    await migrate.upgrade(database_url(config))


def prepare_database_in_child(config: RuntimeConfig) -> None:
    """``prepare_database`` in a short-lived process, so this one never loads Alembic."""
    done = subprocess.run(
        [sys.executable, "-m", "lockgate.store.migrate"],
        input=database_url(config),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise StoreError(
            done.stderr.strip().splitlines()[-1] if done.stderr else "migration failed"
        )


def resolve_pepper(config: RuntimeConfig) -> bytes:
    """The API key pepper: configured, from the environment, or (embedded) a local file.

    Scale-out replicas must share one pepper, so there it has to be configured.
    """
    if config.auth.api_key_pepper is not None or os.environ.get(DEFAULT_PEPPER_ENV):
        return load_pepper(config.auth.api_key_pepper)
    if not is_embedded(config):
        raise ValueError(
            f"set {DEFAULT_PEPPER_ENV} (or auth.api_key_pepper): every replica sharing "
            "the database must hash API keys with the same pepper"
        )
    path = Path(config.server.data_dir) / _PEPPER_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write("hex:" + secrets.token_hex(32) + "\n")
        log.info("generated an API key pepper in %s (keep it with the database)", path)
    return load_pepper(SecretRef(file=str(path)))


# secretbox.DEFAULT_ENV, named here so deployments without it never load AES-GCM.
_MASTER_KEYS_ENV = "LOCKGATE_MASTER_KEYS"


def load_keyring() -> Keyring | None:
    """The master keys encrypting secrets at rest (upstream credentials, idempotent
    replays), or None when ``LOCKGATE_MASTER_KEYS`` is unset. Raises ``KeyringError``
    (a ``ValueError``) for a malformed value, so a bad key stops start-up."""
    if not os.environ.get(_MASTER_KEYS_ENV, "").strip():
        return None
    from lockgate.tenancy.secretbox import Keyring

    return Keyring.from_env(_MASTER_KEYS_ENV)


def metrics_directory(config: RuntimeConfig, *, has_ledger_process: bool = True) -> Path | None:
    """Where a node's processes share metric snapshots: several workers, or a worker and
    the ``lockgate-ledger`` flusher process (what ``serve`` runs with metering on). None:
    one process alone (``has_ledger_process=False``: it flushes its own journal, as the
    demo and tests that run ``run_gateway`` do)."""
    has_ledger = has_ledger_process and config.metering.enabled
    if config.server.workers <= 1 and not has_ledger:
        return None
    return Path(config.server.data_dir) / "metrics"
