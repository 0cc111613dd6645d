"""Upstream back-off signals and answers that will not change on retry.

* Retry-After is honoured for every request of the worker: a throttling deployment
  is skipped until it passes (fail over, or a fast 503 with Retry-After), never hammered.
* 429 without Retry-After keeps its deployment out for a back-off that doubles.
* A content-policy refusal is the answer: passed through with the provider's reason,
  never retried, never sent to a fallback.
* A slow first token fails over at once, and the slow replica is not asked again.
"""

from __future__ import annotations

import json
import time

from lockgate.routing.retry import throttle_s
from lockgate.routing.spec import RetrySpec
from tests.routing.fleet import (
    FAST,
    QUIET,
    chat,
    members,
    model,
    replicas,
    requests_seen,
    served_by,
    sim_config,
    spec,
)
from tests.support import running_gateway


async def test_a_throttling_only_replica_is_not_called_until_its_retry_after_passes() -> None:
    async with (
        replicas(FAST) as (only,),
        running_gateway(spec([model("chat", [only], routing=QUIET)])) as gw,
    ):
        first = await chat(
            gw.port, "chat", headers={"x-sim-fault": "error-429", "x-sim-retry-after": "5"}
        )
        started = time.monotonic()
        later = [await chat(gw.port, "chat") for _ in range(10)]
        elapsed = time.monotonic() - started
    assert first.status == 429
    assert only.engine.requests_total == 1, "skipped while its Retry-After runs"
    for answer in later:
        assert answer.status == 503
        assert answer.headers["x-lockgate-error-code"] == "upstream_throttled"
        assert answer.headers["x-lockgate-error-source"] == "upstream"
        assert 1 <= int(answer.headers["retry-after"]) <= 5
    assert elapsed < 1.0, "answered at once, not after waiting"


async def test_a_throttled_model_falls_back_at_once() -> None:
    throttling = sim_config(fault_rates={"error-429": 1.0}, retry_after_s=5)
    async with replicas(throttling, FAST) as (big_r, small_r):
        big = model("big", [big_r], routing=QUIET, fallbacks=["small"])
        small = model("small", [small_r], routing=QUIET)
        async with running_gateway(spec([big, small])) as gw:
            answers = [await chat(gw.port, "big") for _ in range(5)]
    assert {served_by(a) for a in answers} == {"small-r0"}
    assert {a.headers["x-lockgate-model"] for a in answers} == {"small"}
    assert big_r.engine.requests_total == 1, "asked once, then skipped for its Retry-After"


async def test_a_short_retry_after_is_waited_out_for_a_new_request() -> None:
    once = {**QUIET, "retries": {"max_attempts": 1}}
    async with (
        replicas(FAST) as (only,),
        running_gateway(spec([model("chat", [only], routing=once)])) as gw,
    ):
        short = {"x-sim-fault": "error-429", "x-sim-retry-after": "0.3"}
        assert (await chat(gw.port, "chat", headers=short)).status == 429
        started = time.monotonic()
        answer = await chat(gw.port, "chat")
        waited = time.monotonic() - started
    assert answer.status == 200
    assert waited >= 0.2, "it waited for the Retry-After instead of calling at once"
    assert only.engine.requests_total == 2


def test_429_without_retry_after_backs_off_doubling_up_to_a_cap() -> None:
    spec_ = RetrySpec(throttle_base_s=0.5, throttle_max_s=3)
    assert [throttle_s(n, spec_) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


async def test_a_success_ends_the_throttle_streak() -> None:
    once = {**QUIET, "retries": {"max_attempts": 1}}
    async with (
        replicas(FAST) as (only,),
        running_gateway(spec([model("chat", [only], routing=once)])) as gw,
    ):
        busy = {"x-sim-fault": "error-429", "x-sim-retry-after": "0"}
        await chat(gw.port, "chat", headers=busy)
        await chat(gw.port, "chat", headers=busy)
        assert members(gw, "chat")["chat-r0"].throttles == 2
        assert (await chat(gw.port, "chat")).status == 200
        assert members(gw, "chat")["chat-r0"].throttles == 0


async def test_a_content_policy_refusal_is_passed_through_and_never_retried() -> None:
    async with replicas(FAST, FAST, FAST) as (a, b, c):
        main = model(
            "chat",
            [a, b],
            routing=QUIET,
            fallbacks=[{"model": "other", "on_failure": True, "on_context_overflow": True}],
        )
        other = model("other", [c], routing=QUIET)
        async with running_gateway(spec([main, other])) as gw:
            answer = await chat(gw.port, "chat", headers={"x-sim-fault": "error-content-policy"})
    assert answer.status == 400
    assert answer.headers["x-lockgate-error-code"] == "content_policy_violation"
    assert answer.headers["x-lockgate-error-source"] == "upstream"
    error = json.loads(answer.body)["error"]
    assert "safety system" in error["message"], "the provider's reason reaches the client"
    assert error["type"] == "invalid_request_error"
    assert requests_seen(a, b, c) == 1


async def test_a_slow_first_token_fails_over_at_once_and_is_not_asked_again() -> None:
    slow = sim_config(fault_rates={"slow-first-token": 1.0}, slow_first_token_ms=3000)
    routing = {**QUIET, "strategy": "weighted_random"}
    async with replicas(slow, FAST) as (sluggish, good):
        m = model(
            "chat",
            [sluggish, good],
            routing=routing,
            weight=[1_000_000, 0.001],
            timeouts=[{"first_byte_s": 0.2}, None],
        )
        async with running_gateway(spec([m])) as gw:
            for _ in range(3):
                started = time.monotonic()
                answer = await chat(gw.port, "chat")
                assert served_by(answer) == "chat-r1"
                assert time.monotonic() - started < 0.2 + 0.15, "no back-off before failing over"
    assert sluggish.engine.requests_total == 3, "one attempt per request, never a second"
