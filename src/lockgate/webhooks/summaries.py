"""Usage summaries per organisation: ``usage.summary.hourly`` and ``usage.summary.daily``.

For each organisation with an enabled subscription to a summary type, once
the last complete hour (day) has been over for ``summary_delay_s`` (so the
ledger's flusher has caught up with its last requests), one event is written
with that bucket's usage from the ledger (``store.usage.aggregate``), totals
and per project. Its ``dedupe_key`` names the organisation and the bucket, so
each summary is written once whoever runs the pass and however often.

A summary is a snapshot: records that reach the store after it was sent (a
journal replayed after a long outage) are in later reports, not in it. Only
the most recent complete bucket is summarised: a deployment that was down for
a day does not send a backlog of hourly summaries when it returns.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from lockgate.metering.budgets import from_micros
from lockgate.store.columns import utc_now
from lockgate.store.repositories.usage import Dimension, Granularity, UsageBucket
from lockgate.store.store import Store
from lockgate.webhooks.model import EventType
from lockgate.webhooks.outbox import enqueue

_KINDS = (
    (EventType.USAGE_SUMMARY_HOURLY, Granularity.HOUR, timedelta(hours=1)),
    (EventType.USAGE_SUMMARY_DAILY, Granularity.DAY, timedelta(days=1)),
)
_COUNTS = (
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cost_micros",
    "estimated_requests",
    "error_requests",
)


def last_complete_bucket(
    granularity: Granularity, now: datetime, delay: timedelta
) -> tuple[datetime, datetime]:
    """``[start, end)`` of the latest hour (day) that ended at least ``delay`` before ``now``."""
    point = now - delay
    if granularity is Granularity.HOUR:
        end = point.replace(minute=0, second=0, microsecond=0)
        return end - timedelta(hours=1), end
    end = point.replace(hour=0, minute=0, second=0, microsecond=0)
    return end - timedelta(days=1), end


class UsageSummaries:
    def __init__(
        self, store: Store, *, delay_s: float, clock: Callable[[], datetime] = utc_now
    ) -> None:
        self._store = store
        self._delay = timedelta(seconds=delay_s)
        self._clock = clock

    async def run_once(self) -> int:
        """Write the summaries due now that were not written yet; returns how many."""
        now = self._clock()
        written = 0
        for event_type, granularity, _ in _KINDS:
            organizations = await self._store.webhooks.subscribed_organizations(event_type)
            if not organizations:
                continue
            start, end = last_complete_bucket(granularity, now, self._delay)
            for organization_id in sorted(organizations):
                key = f"{event_type.value}:{organization_id}:{start.isoformat()}"
                if await self._store.webhooks.has_event(key):
                    continue
                buckets = await self._store.usage.aggregate(
                    organization_id=organization_id,
                    start=start,
                    end=end,
                    granularity=granularity,
                    group_by=[Dimension.PROJECT],
                )
                data = summary_data(granularity, start, end, buckets)
                async with self._store.transaction() as tx:
                    event = await enqueue(
                        tx,
                        organization_id=organization_id,
                        event_type=event_type,
                        dedupe_key=key,
                        data=data,
                    )
                written += event is not None
        return written


def summary_data(
    granularity: Granularity, start: datetime, end: datetime, buckets: Sequence[UsageBucket]
) -> dict[str, Any]:
    """The ``data`` of a usage summary: totals, and the same figures per project."""
    totals = dict.fromkeys(_COUNTS, 0)
    projects = []
    for bucket in buckets:
        figures = {name: int(getattr(bucket, name)) for name in _COUNTS}
        for name, value in figures.items():
            totals[name] += value
        projects.append(
            {
                "project_id": bucket.project_id,
                **figures,
                "cost": f"{from_micros(figures['cost_micros']):f}",
            }
        )
    return {
        "granularity": granularity.value,
        "start": start.isoformat().replace("+00:00", "Z"),
        "end": end.isoformat().replace("+00:00", "Z"),
        "totals": {**totals, "cost": f"{from_micros(totals['cost_micros']):f}"},
        "projects": projects,
    }
