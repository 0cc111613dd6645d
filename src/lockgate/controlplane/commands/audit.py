"""``lockgate audit verify`` and ``lockgate audit export``.

``verify`` walks the whole hash chain in ``seq`` order, a batch at a time
(``AuditLog.iter_all``: short queries, constant memory), checking each entry
as it arrives with ``ChainWalk``: ``tenancy.audit.verify_chain`` does the same
checks but wants the entries as one iterable, and the log may hold millions.

A chain proves what lies between its first entry and the head it ends at, not
that the head itself is the latest: deleting the newest entries leaves a
shorter, intact chain. So ``verify`` prints the head's hash; recording it
elsewhere (a ticket, a log shipper) lets a later run show nothing was cut off.

``export`` writes JSON lines with exactly the fields the hash covers (``at``
in the canonical microsecond form) plus ``prev_hash`` and ``entry_hash``, so
each line can be re-hashed offline, and an unfiltered export re-chained.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from lockgate.controlplane.commands.errors import EXIT_FAILED
from lockgate.controlplane.commands.inputs import parse_since, resolve_organization
from lockgate.controlplane.commands.session import Session
from lockgate.store.errors import NotFound
from lockgate.tenancy.audit import GENESIS_HASH, hash_of
from lockgate.tenancy.model import AuditEntry

BATCH_SIZE = 1000


@dataclass(frozen=True, slots=True)
class ChainBreak:
    """Where the chain first breaks: ``seq`` is the entry that is altered or missing."""

    seq: int
    reason: str
    entry: AuditEntry  # where the break was seen: for a deletion, the entry after the gap


class ChainWalk:
    """Checks entries one at a time, in ``seq`` order, from the genesis hash.

    Broken means, as in ``verify_chain``: a ``seq`` is missing (a deleted row),
    an entry does not point at its predecessor's hash, or its hash does not
    match its content (an altered row).
    """

    def __init__(self) -> None:
        self.count = 0
        self.head: AuditEntry | None = None
        self._prev_hash = GENESIS_HASH

    def check(self, entry: AuditEntry) -> ChainBreak | None:
        expected_seq = self.count + 1
        if entry.seq != expected_seq:
            return ChainBreak(
                expected_seq,
                f"the entry is missing (deleted?); the next one is seq {entry.seq}",
                entry,
            )
        if entry.prev_hash != self._prev_hash:
            return ChainBreak(
                entry.seq,
                f"it does not follow entry {entry.seq - 1} (that entry's hash or this "
                "entry's prev_hash was changed)",
                entry,
            )
        if hash_of(entry) != entry.entry_hash:
            return ChainBreak(entry.seq, "its content does not match its hash (altered)", entry)
        self.count += 1
        self.head = entry
        self._prev_hash = entry.entry_hash
        return None


async def verify(session: Session, args: argparse.Namespace) -> int:
    walk = ChainWalk()
    async for entry in session.store.audit.iter_all(batch_size=BATCH_SIZE):
        broken = walk.check(entry)
        if broken is not None:
            return _report_break(session, walk, broken)
    head = walk.head
    head_text = f" (head seq {head.seq}, hash {head.entry_hash})" if head else ""
    session.out.summary(
        {
            "intact": True,
            "entries": walk.count,
            "head_seq": head.seq if head else 0,
            "head_hash": head.entry_hash if head else GENESIS_HASH,
        },
        f"audit chain intact: {walk.count} entries{head_text}",
    )
    return 0


def _report_break(session: Session, walk: ChainWalk, broken: ChainBreak) -> int:
    entry = broken.entry
    seen = f"{entry.action} on {entry.target_type}:{entry.target_id}"
    if broken.seq == entry.seq:
        line = f"audit chain broken at seq {broken.seq} ({seen}): {broken.reason}"
    else:  # a deleted entry: name what follows the gap
        line = f"audit chain broken at seq {broken.seq}: {broken.reason} ({seen})"
    session.out.summary(
        {
            "intact": False,
            "seq": broken.seq,
            "reason": broken.reason,
            "entry": {
                "seq": entry.seq,
                "action": entry.action,
                "target_type": entry.target_type,
                "target_id": entry.target_id,
            },
            "intact_entries": walk.count,
        },
        line,
    )
    return EXIT_FAILED


async def export(session: Session, args: argparse.Namespace) -> int:
    organization_id = None
    if args.org is not None:
        organization_id = await _organization_id(session, args.org)
    since = parse_since(args.since) if args.since is not None else None
    out = session.out
    async for entry in session.store.audit.iter_all(batch_size=BATCH_SIZE):
        if organization_id is not None and entry.organization_id != organization_id:
            continue
        if since is not None and entry.at < since:
            continue
        out.json_line(entry_record(entry))
    return 0


def entry_record(entry: AuditEntry) -> dict[str, Any]:
    return {
        "seq": entry.seq,
        "at": entry.at.isoformat(timespec="microseconds"),
        "actor": entry.actor,
        "action": entry.action,
        "target_type": entry.target_type,
        "target_id": entry.target_id,
        "organization_id": entry.organization_id,
        "before": entry.before,
        "after": entry.after,
        "source_ip": entry.source_ip,
        "request_id": entry.request_id,
        "prev_hash": entry.prev_hash,
        "entry_hash": entry.entry_hash,
    }


async def _organization_id(session: Session, ref: str) -> str:
    """The organisation's id; an id no longer in the store still selects its entries
    (the log outlives deleted organisations)."""
    try:
        return (await resolve_organization(session.store, ref)).id
    except NotFound:
        if ref.startswith("org_"):
            return ref
        raise
