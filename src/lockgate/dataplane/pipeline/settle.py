"""Stage 7 — settle: account for the request exactly once, whatever happened.

Called by the pipeline for every request that reached it: success, error,
or client disconnect. The settler must not block: durable metering hands the
record to a local journal and returns (the metering issue builds that).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Protocol

from lockgate.dataplane.context import RequestContext

log = logging.getLogger(__name__)


class Settler(Protocol):
    def settle(self, ctx: RequestContext) -> None: ...


class Settlers:
    """Several settlers (metering, metrics, access log, ...), each told of every request.

    One that raises must not cost the others their record: the error is logged
    and the next one still runs.
    """

    __slots__ = ("_all",)

    def __init__(self, *settlers: Settler) -> None:
        self._all = settlers

    def settle(self, ctx: RequestContext) -> None:
        for settler in self._all:
            try:
                settler.settle(ctx)
            except Exception:
                log.exception("settling request %s failed in %r", ctx.request_id, settler)


@dataclass(slots=True)
class UsageTotals:
    """In-process totals: enough to see that every request was counted once."""

    requests: int = 0
    errors: int = 0
    disconnects: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    by_model: dict[str, int] = field(default_factory=dict)

    def settle(self, ctx: RequestContext) -> None:
        self.requests += 1
        if ctx.error is not None:
            self.errors += 1
        if ctx.is_client_disconnected:
            self.disconnects += 1
        if ctx.usage is not None:
            self.prompt_tokens += ctx.usage.prompt_tokens
            self.completion_tokens += ctx.usage.completion_tokens
        if ctx.model is not None:
            self.by_model[ctx.model.name] = self.by_model.get(ctx.model.name, 0) + 1
