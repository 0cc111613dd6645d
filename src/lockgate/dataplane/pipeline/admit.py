"""Stage 3 — admit: let the request in now, make it wait, or turn it away.

An admission returns a ``Ticket``: whatever it reserved (request slots,
estimated tokens, spend) is released or reconciled exactly once, by the
pipeline, when the request ends — success, error or disconnect.
"""

from __future__ import annotations

from typing import Protocol

from lockgate.dataplane.context import RequestContext


class Ticket(Protocol):
    def release(self, ctx: RequestContext) -> None:
        """Reconcile the reservation with what the request really used (``ctx.usage``)."""
        ...


class Admitter(Protocol):
    async def admit(self, ctx: RequestContext) -> Ticket:
        """Reserve capacity for ``ctx``; raise ``RateLimited``-style errors to refuse."""
        ...


class _NothingReserved:
    def release(self, ctx: RequestContext) -> None:
        return None


NOTHING_RESERVED = _NothingReserved()


class AdmitAll:
    async def admit(self, ctx: RequestContext) -> Ticket:
        return NOTHING_RESERVED
