"""Retries end to end: to another replica, within a budget, never after the first byte."""

from __future__ import annotations

import json
import time

import pytest

from tests.routing.fleet import (
    FAST,
    QUIET,
    chat,
    closed_port,
    model,
    replicas,
    requests_seen,
    served_by,
    sim_config,
    spec,
)
from tests.support import running_gateway

BROKEN = sim_config(fault_rates={"error-500": 1.0})


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
async def test_a_500_is_retried_on_another_replica(stream: bool) -> None:
    routing = {**QUIET, "strategy": "weighted_random"}
    async with (
        replicas(FAST, BROKEN) as (good, bad),
        running_gateway(spec([model("chat", [good, bad], routing=routing)])) as gw,
    ):
        answers = [await chat(gw.port, "chat", stream=stream) for _ in range(20)]
    assert {served_by(a) for a in answers} == {"chat-r0"}
    assert bad.engine.requests_total > 0, "some first attempts did go to the broken one"
    assert good.engine.requests_total == 20
    assert bad.engine.requests_total == bad.engine.failed["error-500"]


async def test_a_refused_connection_is_retried_on_another_replica() -> None:
    routing = {**QUIET, "strategy": "weighted_random"}
    async with replicas(FAST) as (good,):
        m = model("chat", [closed_port(), good], routing=routing)
        async with running_gateway(spec([m])) as gw:
            answers = [await chat(gw.port, "chat") for _ in range(20)]
    assert {served_by(a) for a in answers} == {"chat-r1"}


async def test_a_silent_replica_fails_over_at_its_first_byte_deadline() -> None:
    routing = {**QUIET, "strategy": "weighted_random"}
    hung = sim_config(fault_rates={"hang": 1.0})
    async with replicas(FAST, hung) as (good, silent):
        m = model("chat", [good, silent], routing=routing, timeouts=[None, {"first_byte_s": 0.2}])
        async with running_gateway(spec([m])) as gw:
            for _ in range(6):
                started = time.monotonic()
                assert served_by(await chat(gw.port, "chat")) == "chat-r0"
                assert time.monotonic() - started < 0.2 + 0.3
    assert silent.engine.requests_total >= 1


async def test_a_single_replica_is_retried_on_5xx_but_not_on_a_timeout() -> None:
    async with replicas(FAST) as (only,):
        m = model(
            "chat",
            [only],
            routing={**QUIET, "retries": {"backoff_base_ms": 1}},
            timeouts=[{"first_byte_s": 0.2}],
        )
        async with running_gateway(spec([m])) as gw:
            answer = await chat(gw.port, "chat", headers={"x-sim-fault": "error-503"})
            assert answer.status == 503
            assert only.engine.requests_total == 3  # max_attempts, after back-off
            answer = await chat(gw.port, "chat", headers={"x-sim-fault": "hang"})
            assert answer.headers["x-lockgate-error-code"] == "upstream_first_byte_timeout"
            assert only.engine.requests_total == 4  # the same silent replica is not retried


async def test_the_retry_budget_stops_retries_in_an_outage() -> None:
    routing = {
        "retry_budget": {"ratio": 0, "min_per_s": 0.5, "window_s": 10},  # 5 retries per 10 s
        "defaults": {**QUIET, "retries": {"max_attempts": 3, "backoff_base_ms": 1}},
    }
    outage = {"x-sim-fault": "error-500"}  # every replica fails every request
    async with (
        replicas(FAST, FAST) as sims,
        running_gateway(spec([model("chat", list(sims))], routing)) as gw,
    ):
        answers = [await chat(gw.port, "chat", headers=outage) for _ in range(10)]
    assert [a.status for a in answers] == [500] * 10
    # 10 first attempts + the 5 retries the budget allows; without it, 30 calls.
    assert requests_seen(*sims) == 15


@pytest.mark.parametrize("fault", ["cut", "malformed"])
async def test_no_retry_once_the_first_streamed_byte_reached_the_client(fault: str) -> None:
    async with (
        replicas(FAST, FAST) as sims,
        running_gateway(spec([model("chat", list(sims))])) as gw,
    ):
        answer = await chat(
            gw.port,
            "chat",
            stream=True,
            headers={"x-sim-fault": fault, "x-sim-fault-after": "2"},
        )
    assert answer.status == 200
    events = answer.sse_data()
    assert b"[DONE]" not in events
    assert "error" in json.loads(events[-1])
    assert requests_seen(*sims) == 1, "a stream the client has started seeing is never re-sent"


async def test_a_400_is_never_retried() -> None:
    short = sim_config(max_model_len=20)
    async with (
        replicas(short, short) as sims,
        running_gateway(spec([model("chat", list(sims))])) as gw,
    ):
        answer = await chat(gw.port, "chat", "word " * 50)
    assert answer.status == 400
    assert answer.headers["x-lockgate-error-code"] == "context_length_exceeded"
    assert requests_seen(*sims) == 1


async def test_retry_after_fails_over_at_once_and_keeps_traffic_away() -> None:
    routing = {**QUIET, "strategy": "weighted_random"}
    throttling = sim_config(fault_rates={"error-429": 1.0}, retry_after_s=5)
    async with (
        replicas(throttling, FAST) as (busy, good),
        running_gateway(spec([model("chat", [busy, good], routing=routing)])) as gw,
    ):
        started = time.monotonic()
        answers = [await chat(gw.port, "chat") for _ in range(20)]
        elapsed = time.monotonic() - started
    assert {served_by(a) for a in answers} == {"chat-r1"}
    assert elapsed < 2.0, "failed over instead of waiting out Retry-After"
    assert busy.engine.requests_total == 1, "not hammered while its Retry-After runs"


async def test_retry_after_on_the_only_replica_is_waited_out_or_returned() -> None:
    async with (
        replicas(FAST) as (only,),
        running_gateway(spec([model("chat", [only], routing=QUIET)])) as gw,
    ):
        # Short: waited out (never a tight loop), up to max_attempts.
        started = time.monotonic()
        short = {"x-sim-fault": "error-429", "x-sim-retry-after": "0.2"}
        answer = await chat(gw.port, "chat", headers=short)
        assert answer.status == 429
        assert time.monotonic() - started >= 0.4
        assert only.engine.requests_total == 3
        # Long: handed back to the client at once, Retry-After intact.
        started = time.monotonic()
        long = {"x-sim-fault": "error-429", "x-sim-retry-after": "30"}
        answer = await chat(gw.port, "chat", headers=long)
        assert time.monotonic() - started < 0.5
        assert answer.status == 429
        assert answer.headers["retry-after"] == "30"
        assert only.engine.requests_total == 4


async def test_retries_never_outlast_the_first_attempts_total_deadline() -> None:
    hung = sim_config(fault_rates={"hang": 1.0})
    timeouts = {"first_byte_s": 0.3, "total_s": 0.5}
    async with (
        replicas(hung, hung, hung) as sims,
        running_gateway(
            spec([model("chat", list(sims), routing=QUIET, timeouts=[timeouts] * 3)])
        ) as gw,
    ):
        started = time.monotonic()
        answer = await chat(gw.port, "chat")
        elapsed = time.monotonic() - started
    # First attempt: 0.3 s to its first-byte deadline; the retry gets what is left of 0.5 s.
    assert answer.status == 504
    assert answer.headers["x-lockgate-error-code"] == "upstream_total_timeout"
    assert 0.45 <= elapsed < 0.5 + 0.4
    assert requests_seen(*sims) == 2
