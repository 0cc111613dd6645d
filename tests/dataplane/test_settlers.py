"""``Settlers``: every settler hears of every request, even when one of them fails."""

from __future__ import annotations

import logging

import pytest

from lockgate.dataplane.context import RequestContext
from lockgate.dataplane.pipeline.settle import Settlers, UsageTotals
from lockgate.operations import Operation


class Broken:
    def settle(self, ctx: RequestContext) -> None:
        raise RuntimeError("disk full")


def test_a_failing_settler_is_logged_and_the_next_still_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    first, last = UsageTotals(), UsageTotals()
    settlers = Settlers(first, Broken(), last)
    ctx = RequestContext("req-1", None, Operation.CHAT, 0.0)  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR):
        settlers.settle(ctx)
    assert (first.requests, last.requests) == (1, 1)
    assert "settling request req-1 failed" in caplog.text
    assert "disk full" in caplog.text
