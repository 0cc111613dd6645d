"""Helpers for the observability tests: a real gateway with our settlers, parsed scrapes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from lockgate.config import GatewaySpec, resolve
from lockgate.dataplane.context import RequestContext
from lockgate.dataplane.pipeline.authenticate import Authenticator
from lockgate.dataplane.pipeline.authorize import Authorizer
from lockgate.dataplane.pipeline.settle import Settler, Settlers, UsageTotals
from lockgate.operations import Operation
from lockgate.serve import Gateway

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@asynccontextmanager
async def observed_gateway(
    spec: GatewaySpec,
    *settlers: Settler,
    authenticator: Authenticator | None = None,
    authorizer: Authorizer | None = None,
) -> AsyncIterator[tuple[Gateway, UsageTotals]]:
    """A real gateway on loopback whose settler is ``settlers`` plus a counting one."""
    totals = UsageTotals()
    gateway = Gateway(
        resolve(spec),
        settler=Settlers(*settlers, totals),
        authenticator=authenticator,
        authorizer=authorizer,
    )
    await gateway.start()
    try:
        yield gateway, totals
    finally:
        await gateway.stop(drain_timeout_s=1.0)


async def settled(totals: UsageTotals, count: int, timeout_s: float = 5.0) -> None:
    """Wait until ``count`` requests were settled (a stream settles after its last byte)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while totals.requests < count:
        assert asyncio.get_running_loop().time() < deadline, f"{totals.requests} of {count}"
        await asyncio.sleep(0.005)


def parse(body: bytes) -> Samples:
    """Every sample of a text exposition, keyed by sample name and label set."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when absent (a series that never moved is not exported)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, where: Callable[[dict[str, str]], bool]) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and where(dict(ls)))


def context(**fields: Any) -> RequestContext:
    """A settled request's context, for unit tests of the settlers."""
    ctx = RequestContext("req-test", None, Operation.CHAT, 0.0)  # type: ignore[arg-type]
    for name, field_value in fields.items():
        setattr(ctx, name, field_value)
    if ctx.finished_at is None:
        ctx.finished_at = ctx.started_at
    return ctx
