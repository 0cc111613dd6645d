"""Progressive rollout: sticky split, live changes, shadow copies, automatic rollback."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from lockgate.routing.lifecycle_spec import RollbackSpec, RolloutSpec
from lockgate.routing.rollout import BUCKETS, RollbackMonitor, Rollout
from lockgate.sim import SimServer
from tests.routing.fleet import FAST, chat, replicas, sim_config, url
from tests.routing.lifecycle_stack import config_for, keys, stack
from tests.routing.test_registration import until


def chat_model(v1: SimServer, v2: SimServer, **rollout: Any) -> dict[str, Any]:
    return {
        "name": "chat",
        "versions": [
            {"version": "v1", "deployments": [{"name": "v1-r0", "base_url": url(v1)}]},
            {"version": "v2", "deployments": [{"name": "v2-r0", "base_url": url(v2)}]},
        ],
        "rollout": {"candidate": "v2", **rollout},
    }


# -- the split itself (pure) -----------------------------------------------------------
def test_the_split_matches_its_percentage_over_2000_callers_and_sticks() -> None:
    rollout = Rollout("chat", RolloutSpec(candidate="v2", percent=10))
    picks = {
        session: rollout.picks_candidate({b"x-session-id": session.encode()}, None, None)
        for session in (f"session-{i}" for i in range(2000))
    }
    share = sum(picks.values()) / len(picks)
    assert 0.08 <= share <= 0.12, share
    for session, picked in list(picks.items())[:200]:  # a caller never flips
        assert rollout.picks_candidate({b"x-session-id": session.encode()}, None, None) is picked
    # Raising the share only moves more callers over: nobody on v2 goes back.
    rollout.set(candidate="v2", percent=30, shadow_percent=0, is_rolled_back=False)
    wider = {s: rollout.picks_candidate({b"x-session-id": s.encode()}, None, None) for s in picks}
    assert all(wider[s] for s, picked in picks.items() if picked)
    assert 0.27 <= sum(wider.values()) / len(wider) <= 0.33


def test_stickiness_follows_session_then_user_then_key() -> None:
    rollout = Rollout("chat", RolloutSpec(candidate="v2", percent=50))
    users = [f"user-{i}" for i in range(2000)]
    by_user = [rollout.picks_candidate({}, {"user": u}, "api_key:k") for u in users]
    assert 0.46 <= sum(by_user) / len(by_user) <= 0.54
    # The session header wins over the user field; the key is the last resort.
    for user in users[:100]:
        assert rollout.picks_candidate({b"x-session-id": b"s1"}, {"user": user}, None) is (
            rollout.picks_candidate({b"x-session-id": b"s1"}, None, None)
        )
    keys = [rollout.picks_candidate({}, None, f"api_key:{i}") for i in range(2000)]
    assert 0.46 <= sum(keys) / len(keys) <= 0.54
    assert rollout.threshold == BUCKETS // 2


def test_rolled_back_or_zero_means_no_candidate_traffic() -> None:
    rollout = Rollout("chat", RolloutSpec(candidate="v2", percent=100))
    assert rollout.threshold == BUCKETS
    rollout.roll_back("errors")
    assert rollout.threshold == 0
    assert rollout.rolled_back_reason == "errors"


def test_the_monitor_needs_its_minimum_sample_and_forgets_old_answers() -> None:
    monitor = RollbackMonitor(
        RollbackSpec(window_s=10, min_samples=4, max_error_ratio=0.5, max_latency_ms=100)
    )
    assert monitor.record(0.0, True, 0.01) is None  # 1 error of 1: too few answers
    assert monitor.record(0.1, True, 0.01) is None
    assert monitor.record(0.2, False, 0.01) is None
    assert "error rate 3/4" in (monitor.record(0.3, True, 0.01) or "")
    monitor.reset()
    for t in range(4):
        assert monitor.record(float(t), t == 0, 0.01) is None  # one old error, then fine
    assert monitor.record(20.0, False, 0.01) is None  # the window slid: 1 sample left
    slow = [monitor.record(20.0 + i / 10, False, 0.5) for i in range(4)]
    assert slow[-1] is not None
    assert "slower than 100 ms" in slow[-1]


# -- through a running gateway ----------------------------------------------------------
async def test_sessions_stick_to_a_version_through_the_gateway(tmp_path: Path) -> None:
    async with replicas(FAST, FAST) as (v1, v2):
        spec = config_for([chat_model(v1, v2, percent=25)], tmp_path)
        async with stack(spec) as gw:
            served: dict[str, str] = {}
            for i in range(300):
                response = await chat(gw.port, "chat", headers={"x-session-id": f"s{i}"})
                served[f"s{i}"] = response.headers["x-lockgate-model"]
                assert json.loads(response.body)["model"] == served[f"s{i}"]
            share = sum(v == "chat@v2" for v in served.values()) / len(served)
            assert 0.17 <= share <= 0.33, share
            for session in list(served)[:30]:
                again = await chat(gw.port, "chat", headers={"x-session-id": session})
                assert again.headers["x-lockgate-model"] == served[session]
            pinned = await chat(gw.port, "chat@v1", headers={"x-session-id": "s1"})
            assert pinned.headers["x-lockgate-model"] == "chat@v1"


async def test_a_live_change_through_the_admin_api_reaches_the_gateway(tmp_path: Path) -> None:
    async with (
        replicas(FAST, FAST) as (v1, v2),
        stack(config_for([chat_model(v1, v2, percent=0)], tmp_path)) as gw,
    ):
        credentials = await keys(gw.services)
        assert (await chat(gw.port, "chat")).headers["x-lockgate-model"] == "chat@v1"
        async with gw.admin(credentials.superadmin) as client:
            changed = await client.patch("/admin/v1/rollouts/chat", json={"percent": 100})
            assert changed.status_code == 200, changed.text
            assert changed.json()["percent"] == 100
            rollout = gw.gateway.dataplane.router.versioned["chat"].rollout
            await until(lambda: rollout.threshold == BUCKETS)
            for i in range(5):
                response = await chat(gw.port, "chat", headers={"x-session-id": f"s{i}"})
                assert response.headers["x-lockgate-model"] == "chat@v2"
            shown = (await client.get("/admin/v1/rollouts/chat")).json()
            assert shown == {
                "model": "chat", "default_version": "v1", "candidate": "v2", "percent": 100.0,
                "shadow_percent": 0.0, "is_rolled_back": False, "reason": None,
            }  # fmt: skip
            refused = await client.patch("/admin/v1/rollouts/chat", json={"candidate": "v1"})
            assert refused.status_code == 422  # the default cannot be its own candidate
        audit = [
            e.action for e in await gw.services.store.audit.list(organization_id=None, limit=20)
        ]
        assert "rollout.set" in audit


async def test_shadow_copies_reach_the_candidate_and_never_the_client(tmp_path: Path) -> None:
    async with replicas(FAST, FAST) as (v1, v2):
        model = chat_model(v1, v2, percent=0, shadow={"percent": 100, "max_concurrency": 8})
        async with stack(config_for([model], tmp_path)) as gw:
            for i in range(10):
                response = await chat(gw.port, "chat", headers={"x-session-id": f"s{i}"})
                assert response.status == 200
                assert response.headers["x-lockgate-model"] == "chat@v1"
                assert json.loads(response.body)["model"] == "chat@v1"
            shadow = gw.lifecycle.shadow
            await until(lambda: len(shadow.records("chat")) == 10)
            assert v1.engine.requests_total == 10
            assert v2.engine.requests_total == 10  # every copy, none of them answered anyone
            record = shadow.records("chat")[0]
            assert record.candidate == "chat@v2"
            assert record.shadow is not None
            assert record.shadow.status == 200
            assert record.shadow.completion_tokens == 4
            assert record.primary_status == 200
            assert record.primary_completion_tokens == 4
            assert shadow.totals["chat"].sent == 10


async def test_shadow_copies_are_bounded_and_never_wait(tmp_path: Path) -> None:
    slow = sim_config(ttft_ms=2000, tokens_per_s=0)
    async with replicas(FAST, slow) as (v1, v2):
        model = chat_model(v1, v2, shadow={"percent": 100, "max_concurrency": 2})
        async with stack(config_for([model], tmp_path)) as gw:
            for i in range(6):  # each answered at once, while copies hang on the candidate
                assert (
                    await chat(gw.port, "chat", headers={"x-session-id": f"s{i}"})
                ).status == 200
            shadow = gw.lifecycle.shadow
            assert shadow.in_flight == 2
            assert shadow.totals["chat"].sent == 2
            assert shadow.totals["chat"].skipped == 4


async def test_a_failing_candidate_is_rolled_back_and_stays_so_until_resumed(
    tmp_path: Path,
) -> None:
    broken = sim_config(fault_rates={"error-500": 1.0})
    async with replicas(FAST, broken) as (v1, v2):
        model = chat_model(
            v1,
            v2,
            percent=50,
            rollback={"min_samples": 5, "max_error_ratio": 0.5, "window_s": 60},
        )
        model["routing"] = {"retries": {"max_attempts": 1}}
        async with stack(config_for([model], tmp_path)) as gw:
            credentials = await keys(gw.services)
            versioned = gw.gateway.dataplane.router.versioned["chat"]
            statuses = [
                (await chat(gw.port, "chat", headers={"x-session-id": f"s{i}"})).status
                for i in range(40)
            ]
            assert statuses.count(500) >= 5
            assert versioned.rollout.is_rolled_back
            assert statuses[-5:] == [200] * 5  # everyone is back on v1
            failures = v2.engine.requests_total
            entries: list[Any] = []
            for _ in range(100):  # recorded in the background, once
                entries = list(
                    await gw.services.store.audit.list(
                        organization_id=None, action="rollout.rolled_back", limit=5
                    )
                )
                if entries:
                    break
                await asyncio.sleep(0.02)
            (entry,) = entries
            assert entry.actor == "system"
            assert entry.after is not None
            assert entry.after["is_rolled_back"] is True
            assert "error rate" in entry.after["reason"]
            # A reload (say another worker's change) does not undo it; only a resume does.
            await gw.synced()
            assert versioned.rollout.is_rolled_back
            for i in range(10):
                await chat(gw.port, "chat", headers={"x-session-id": f"s{i}"})
            assert v2.engine.requests_total == failures
            async with gw.admin(credentials.superadmin) as client:
                state = (await client.get("/admin/v1/rollouts/chat")).json()
                assert state["is_rolled_back"] is True
                resumed = await client.post("/admin/v1/rollouts/chat/resume")
                assert resumed.status_code == 200, resumed.text
            await until(lambda: not versioned.rollout.is_rolled_back)
