"""``UsageRecord``: the ledger's one line per request.

A record is what a customer is billed from, so every field is a plain value
fixed when the request was settled: token counts as the upstream reported them
(or an estimate, flagged), the price version that applied and the cost it came
to in integer micro-units. Nothing in it is recomputed later.

``record_id`` is the ledger's primary key and idempotency key. It is not the
request id: a client may send its own ``x-request-id`` (and reuse it, by
accident or to dodge billing), so two real requests can share one request id.
The record id names the journal entry that made the record durable (the
journal's random id, the entry's sequence number, the record's place in it), so
it is unique per request and identical every time that entry is re-sent.

A ``NamedTuple`` rather than a frozen dataclass: it is as immutable, but built
and unpacked several times faster (the flusher builds one per request), and its
field order is the table's column order, so the store can insert records as they
are (``tests/metering`` holds the two orders equal).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple


class UsageRecord(NamedTuple):
    record_id: str
    request_id: str
    # When the request arrived (UTC): the time it is billed, priced and bucketed under.
    occurred_at: datetime
    organization_id: str | None
    project_id: str | None
    api_key_id: str | None
    principal: str  # "api_key:<id>", "jwt:<issuer>#<subject>" or "anonymous"
    operation: str  # chat.completions, completions, embeddings, passthrough
    model: str  # the public model name (as requested, if it named no known model)
    upstream_model: str | None  # the model version the deployment serves
    deployment: str | None
    prompt_tokens: int
    completion_tokens: int  # includes reasoning tokens (OpenAI's convention)
    cached_tokens: int  # part of prompt_tokens
    reasoning_tokens: int  # part of completion_tokens
    # The upstream reported no usage; the counts are the gateway's estimate.
    is_estimated: bool
    status: int
    error_code: str | None
    error_source: str | None  # client, gateway, upstream
    ttft_ms: float | None  # streams: upstream request sent → first event relayed
    total_ms: float | None  # request arrived → request finished
    is_stream: bool
    is_client_disconnected: bool
    price_id: str | None  # the price version applied (None: no price configured)
    currency: str | None
    cost_micros: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_json(self) -> dict[str, Any]:
        """Every field, JSON-ready (the time as RFC 3339 text), for exports."""
        body = self._asdict()
        body["occurred_at"] = self.occurred_at.isoformat(timespec="microseconds")
        return body

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> UsageRecord:
        """The inverse of ``to_json``; raises ``KeyError``/``ValueError`` on a malformed one."""
        fields = {name: value[name] for name in cls._fields}
        fields["occurred_at"] = datetime.fromisoformat(value["occurred_at"])
        return cls(**fields)
