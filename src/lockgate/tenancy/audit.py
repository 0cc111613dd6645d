"""The audit trail's hash chain: each entry commits to the one before it.

``entry_hash = sha256(prev_hash || canonical JSON of the entry's content)``.
Altering any field of any entry, deleting one, or reordering them changes a
hash that a later entry committed to, so ``verify_chain`` finds the first
entry where the chain breaks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import orjson

from lockgate.tenancy.model import AuditEntry

GENESIS_HASH = "0" * 64


def entry_content(
    *,
    seq: int,
    at: datetime,
    actor: str,
    action: str,
    target_type: str,
    target_id: str,
    organization_id: str | None,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    source_ip: str | None,
    request_id: str | None,
) -> bytes:
    """Canonical bytes of an entry's content (sorted keys, UTC microseconds)."""
    return orjson.dumps(
        {
            "seq": seq,
            "at": at.isoformat(timespec="microseconds"),
            "actor": actor,
            "action": action,
            "target_type": target_type,
            "target_id": target_id,
            "organization_id": organization_id,
            "before": before,
            "after": after,
            "source_ip": source_ip,
            "request_id": request_id,
        },
        option=orjson.OPT_SORT_KEYS,
    )


def chain_hash(prev_hash: str, content: bytes) -> str:
    return hashlib.sha256(prev_hash.encode() + content).hexdigest()


def hash_of(entry: AuditEntry) -> str:
    """Recompute what ``entry.entry_hash`` should be."""
    content = entry_content(
        seq=entry.seq,
        at=entry.at,
        actor=entry.actor,
        action=entry.action,
        target_type=entry.target_type,
        target_id=entry.target_id,
        organization_id=entry.organization_id,
        before=entry.before,
        after=entry.after,
        source_ip=entry.source_ip,
        request_id=entry.request_id,
    )
    return chain_hash(entry.prev_hash, content)


def verify_chain(entries: Iterable[AuditEntry]) -> AuditEntry | None:
    """Walk entries in ``seq`` order; return the first broken one, or None if intact.

    Broken means: its hash does not match its content, it does not point at the
    previous entry's hash, or a sequence number is missing (a deleted row).
    """
    prev_hash = GENESIS_HASH
    expected_seq = 1
    for entry in entries:
        if (
            entry.seq != expected_seq
            or entry.prev_hash != prev_hash
            or hash_of(entry) != entry.entry_hash
        ):
            return entry
        prev_hash = entry.entry_hash
        expected_seq += 1
    return None
