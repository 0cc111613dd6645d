"""The audit trail: read by auditors and admins of an organisation; verified by superadmins."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from lockgate.controlplane.admin.deps import Caller, Services
from lockgate.controlplane.admin.schemas import AuditEntryOut, AuditVerifyOut, Page
from lockgate.tenancy.audit import GENESIS_HASH, hash_of
from lockgate.tenancy.rbac import Permission

router = APIRouter(prefix="/admin/v1")


@router.get("/organizations/{org_id}/audit")
async def list_audit(
    org_id: str,
    caller: Caller,
    svc: Services,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before_seq: int | None = None,
    action: str | None = None,
    since: datetime | None = None,
) -> Page[AuditEntryOut]:
    """Newest first; pass the last entry's ``seq`` as ``before_seq`` for the next page."""
    caller.require(Permission.AUDIT_READ, org_id)
    entries = await svc.store.audit.list(
        organization_id=org_id, action=action, since=since, limit=limit + 1, before_seq=before_seq
    )
    data = [AuditEntryOut.model_validate(e, from_attributes=True) for e in entries[:limit]]
    return Page(
        data=data, has_more=len(entries) > limit, last_id=str(data[-1].seq) if data else None
    )


@router.get("/audit/verify")
async def verify_audit(caller: Caller, svc: Services) -> AuditVerifyOut:
    """Walk the whole chain (streamed in batches); the first broken entry, if any."""
    caller.require(Permission.AUDIT_READ, None)
    prev_hash, expected, count = GENESIS_HASH, 1, 0
    async for entry in svc.store.audit.iter_all():
        if (
            entry.seq != expected
            or entry.prev_hash != prev_hash
            or hash_of(entry) != entry.entry_hash
        ):
            return AuditVerifyOut(intact=False, entries=count, first_broken_seq=entry.seq)
        prev_hash, expected, count = entry.entry_hash, expected + 1, count + 1
    return AuditVerifyOut(intact=True, entries=count, first_broken_seq=None)
