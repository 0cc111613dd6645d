"""Strategies, cache affinity and pool choice in-process: thousands of picks, no network."""

from __future__ import annotations

import collections
import math
from typing import Any

import pytest

from lockgate.config import GatewaySpec, resolve
from lockgate.routing.affinity import CacheAffinity, KeyReader, prompt_prefix
from lockgate.routing.member import Member, Outcome
from lockgate.routing.pool import Pool, build_plans
from lockgate.routing.spec import AffinitySpec, RetryBudgetSpec


def pool(count: int = 3, routing: dict[str, Any] | None = None, **per: list[Any]) -> Pool:
    deployments = []
    for i in range(count):
        dep: dict[str, Any] = {"name": f"r{i}", "base_url": f"http://10.0.0.{i + 1}:8000/v1"}
        dep.update({field: values[i] for field, values in per.items()})
        deployments.append(dep)
    model = {"name": "m", "routing": routing or {}, "deployments": deployments}
    config = resolve(GatewaySpec.model_validate({"models": [model]}))
    return Pool(config.models[0])


def counts(p: Pool, picks: int, key: bytes | None = None) -> collections.Counter[str]:
    seen: collections.Counter[str] = collections.Counter()
    for _ in range(picks):
        lease = p.choose(0.0, key)
        assert lease is not None
        seen[lease.member.name] += 1
        lease.end(Outcome.SUCCESS, 0.0)
    return seen


def test_weighted_random_follows_the_weights() -> None:
    seen = counts(pool(2, {"strategy": "weighted_random"}, weight=[1, 3]), 20_000)
    assert seen["r1"] / 20_000 == pytest.approx(0.75, abs=0.015)


def test_least_outstanding_picks_the_idlest_and_breaks_ties_at_random() -> None:
    p = pool(3)
    busy = [p.members[0].lease(), p.members[0].lease(), p.members[1].lease()]
    assert {p.strategy.pick(p.members, None, 0.0).name for _ in range(50)} == {"r2"}
    for lease in busy:
        lease.end(Outcome.SUCCESS, 0.0)
    assert set(counts(p, 300)) == {"r0", "r1", "r2"}  # all idle: spread, not always r0


def test_power_of_two_weighs_load_by_capacity() -> None:
    p = pool(2, {"strategy": "power_of_two"}, capacity=[1, 4])
    held = []
    for _ in range(10):
        lease = p.choose(0.0, None)
        assert lease is not None
        held.append(lease)
    by_member = collections.Counter(lease.member.name for lease in held)
    assert by_member["r1"] == 8  # load (outstanding + 1) / capacity stays level: 2:8


def test_latency_aware_prefers_the_fast_replica_and_re_measures_stale_ones() -> None:
    p = pool(2, {"strategy": "latency"})
    slow, fast = p.members
    slow.lease().end(Outcome.SUCCESS, 0.0, ttft_s=0.5)
    fast.lease().end(Outcome.SUCCESS, 0.0, ttft_s=0.01)
    assert {p.strategy.pick(p.members, None, 1.0).name for _ in range(50)} == {"r1"}
    # Forty requests piled on the fast one: now the slow one is the better bet.
    held = [fast.lease() for _ in range(60)]
    assert p.strategy.pick(p.members, None, 1.0) is slow
    for lease in held:
        lease.end(Outcome.NEUTRAL, 1.0)
    # Thirty seconds without a sample: the slow one's number is not trusted any more.
    fast.lease().end(Outcome.SUCCESS, 40.0, ttft_s=0.01)
    assert slow.latency_s(40.0) is None
    assert "r0" in {p.strategy.pick(p.members, None, 40.0).name for _ in range(50)}


def test_ttft_is_a_moving_average() -> None:
    member = pool(1).members[0]
    member.lease().end(Outcome.SUCCESS, 0.0, ttft_s=1.0)
    member.lease().end(Outcome.SUCCESS, 0.1, ttft_s=0.0)
    assert member.ttft_s == pytest.approx(0.8)
    member.lease().end(Outcome.FAILURE, 0.2, ttft_s=0.0)  # failures are not latencies
    assert member.ttft_s == pytest.approx(0.8)


# -- cache affinity ----------------------------------------------------------------------
def affinity_pool(count: int = 3, **affinity: Any) -> Pool:
    return pool(count, {"strategy": "cache_affinity", "affinity": affinity})


def test_same_key_same_replica_different_keys_spread() -> None:
    p = affinity_pool(3)
    for key in (b"p:alpha", b"p:beta", b"h:session-1"):
        assert len(counts(p, 20, key)) == 1
    homes = collections.Counter(
        counts(p, 1, b"p:system prompt %d" % i).most_common(1)[0][0] for i in range(3000)
    )
    assert set(homes) == {"r0", "r1", "r2"}
    assert all(800 <= n <= 1200 for n in homes.values()), homes


def test_the_ring_is_the_same_in_every_process() -> None:
    # CRC-32, not hash(): another worker or gateway replica maps keys identically.
    first, second = affinity_pool(3), affinity_pool(3)
    for i in range(50):
        key = b"p:%d" % i
        a = first.strategy.pick(first.members, key, 0.0).name
        assert second.strategy.pick(second.members, key, 0.0).name == a


def test_bounded_load_spills_a_hot_key_and_never_exceeds_the_bound() -> None:
    p = affinity_pool(3, load_factor=0.25)
    held = []
    for placed in range(60):
        lease = p.choose(0.0, b"p:hot")
        assert lease is not None
        held.append(lease)
        bound = math.ceil(1.25 * (placed + 1) / 3)
        assert max(m.outstanding for m in p.members) <= bound
    spread = collections.Counter(lease.member.name for lease in held)
    assert max(spread.values()) == math.ceil(1.25 * 60 / 3)  # the home replica is full
    home = max(spread, key=lambda name: spread[name])
    for lease in held:
        lease.end(Outcome.SUCCESS, 0.0)
    assert counts(p, 5, b"p:hot") == {home: 5}  # and gets the key back once load allows


def test_affinity_only_picks_candidates() -> None:
    p = affinity_pool(3)
    strategy = p.strategy
    assert isinstance(strategy, CacheAffinity)
    home = strategy.pick(p.members, b"p:x", 0.0)
    others = [m for m in p.members if m is not home]
    assert strategy.pick(others, b"p:x", 0.0) in others


def test_key_sources_in_order() -> None:
    read = KeyReader(AffinitySpec())
    body = {"user": "u-1", "messages": [{"role": "system", "content": "You are terse."}]}
    assert read({b"x-session-id": b"s-9"}, body) == b"h:s-9"
    assert read({}, body) == b"u:u-1"
    assert read({}, {"messages": body["messages"]}) == b"p:system\x1fYou are terse.\x1e"
    assert read({}, {}) is None
    only_prefix = KeyReader(AffinitySpec(sources=("prefix",), prefix_bytes=16))
    assert only_prefix({b"x-session-id": b"s"}, body) == b"p:system\x1fYou are t"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"prompt": "Once upon a time"}, b"Once upon"),
        ({"prompt": ["Once upon a time", "x"]}, b"Once upon"),
        ({"prompt": [1, 2, 3]}, b"1,2,3"),
        ({"input": "embed me please"}, b"embed me "),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "héllo"}]}]},
            "user\x1fhéllo\x1e".encode()[:9],
        ),
        ({"messages": "not a list"}, b""),
    ],
)
def test_prompt_prefix(body: dict[str, Any], expected: bytes) -> None:
    assert prompt_prefix(body, 9) == expected


# -- pool choice ---------------------------------------------------------------------------
def test_retries_prefer_untried_then_calm_then_the_same_only_if_allowed() -> None:
    p = pool(2)
    r0, r1 = p.members
    lease = p.choose(0.0, None, tried=[r0])
    assert lease is not None
    assert lease.member is r1
    assert p.choose(0.0, None, tried=[r0, r1]) is None
    again = p.choose(0.0, None, tried=[r0, r1], allow_same=True)
    assert again is not None
    p.throttle(r1, 5.0, now=0.0)  # an upstream Retry-After: second choice until it passes
    assert counts(p, 20) == {"r0": 20}
    assert r1.throttled_until == 5.0


def test_throttled_deployments_still_serve_when_nothing_else_can() -> None:
    p = pool(1)
    p.throttle(p.members[0], 5.0, now=0.0)
    assert counts(p, 3) == {"r0": 3}


def test_ejected_members_are_skipped_and_none_is_left_when_all_are_out() -> None:
    p = pool(2, {"outlier": {"consecutive_failures": 1, "base_ejection_s": 2}})
    r0, r1 = p.members
    r0.lease().end(Outcome.FAILURE, 0.0)
    assert counts(p, 10) == {"r1": 10}
    r1.lease().end(Outcome.FAILURE, 0.5)
    assert p.choose(1.0, None) is None
    assert p.back_at(1.0) == 2.0
    lease = p.choose(2.0, None)
    assert lease is not None
    assert lease.member is r0


def test_half_open_member_gets_a_single_probe() -> None:
    p = pool(
        2, {"breaker": {"window": 2, "min_calls": 2, "open_s": 1}, "outlier": {"enabled": False}}
    )
    r0 = p.members[0]
    for _ in range(2):
        r0.lease().end(Outcome.FAILURE, 0.0)
    held = [p.choose(1.5, None) for _ in range(10)]
    assert sum(1 for lease in held if lease is not None and lease.member is r0) == 1
    probe = next(lease for lease in held if lease is not None and lease.member is r0)
    assert probe.is_probe
    probe.end(Outcome.SUCCESS, 1.6)
    assert r0.breaker is not None
    assert r0.breaker.state.value == "closed"


def test_leases_end_once() -> None:
    member: Member = pool(1).members[0]
    lease = member.lease()
    assert member.outstanding == 1
    lease.end(Outcome.FAILURE, 0.0)
    lease.end(Outcome.FAILURE, 0.0)
    assert member.outstanding == 0
    assert member.outlier.consecutive == 1


def test_passthrough_paths_limit_the_candidates() -> None:
    p = pool(2, passthrough=[["/v1/rerank"], []])
    lease = p.choose(0.0, None, path="/v1/rerank")
    assert lease is not None
    assert lease.member.name == "r0"
    assert p.serves("/v1/rerank")
    assert not p.serves("/v1/tokenize")


def test_plans_list_fallbacks_once_with_merged_conditions() -> None:
    models = [
        {
            "name": "a",
            "fallbacks": ["b", {"model": "b-alias", "on_context_overflow": True}, "c"],
            "deployments": [{"name": "d", "base_url": "http://a:1/v1"}],
        },
        {
            "name": "b",
            "aliases": ["b-alias"],
            "deployments": [{"name": "d", "base_url": "http://b:1/v1"}],
        },
        {"name": "c", "deployments": [{"name": "d", "base_url": "http://c:1/v1"}]},
    ]
    config = resolve(GatewaySpec.model_validate({"models": models}))
    plans = build_plans(config.models, RetryBudgetSpec())
    steps = plans["a"].steps
    assert [s.pool.model.name for s in steps] == ["a", "b", "c"]
    assert steps[1].fallback is not None
    assert steps[1].fallback.on_failure
    assert steps[1].fallback.on_context_overflow
    assert [s.pool.model.name for s in plans["b"].steps] == ["b"]
