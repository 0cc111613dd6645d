"""Tenancy operator commands (``orgs update``, ``projects update|delete``, ``keys update``,
``keys create --require-tag``, ``users``) as real processes next to a running gateway,
on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from tests.controlplane.operator import (
    KEY,
    MODEL,
    Deployment,
    chat,
    gateway,
    gather,
    refused_within_1s,
    statuses,
)


async def test_tenancy_commands_reach_the_running_gateway(
    deployment: Deployment, tmp_path: Path
) -> None:
    d = deployment
    extras = d.database_url is None  # input checks run once, on SQLite
    loop = asyncio.get_running_loop()
    acme = (await d.cli("orgs create acme --json")).one()
    async with gateway(d, tmp_path / "gateway.log") as listening:
        commands = {
            "web": d.cli(f"projects create --org acme web --allow-model {MODEL}"),
            "ann": d.cli("users create --org acme --email Ann@Acme.test --name Ann --json"),
            "ceiling": d.cli(
                f"orgs update acme --allow-model {MODEL} --allow-model other"
                " --limit requests_per_minute=600 --limit spend_per_day=25.5"
            ),
        }
        if extras:
            commands |= {
                "bad_limit": d.cli("orgs update acme --limit burst=5", expect=2),
                "bad_pair": d.cli("orgs update acme --limit rpm", expect=2),
                "bad_email": d.cli("users create --org acme --email nobody --name x", expect=2),
            }
        r = await gather(commands)
        assert r["ann"].one()["email"] == "ann@acme.test"
        assert re.search(rf"allowed models\s+{MODEL},other", r["ceiling"].out)
        assert re.search(r"limits\s+requests_per_minute=600,spend_per_day=25.5", r["ceiling"].out)
        if extras:
            assert "burst" in r["bad_limit"].err
            assert "--limit 'rpm'" in r["bad_pair"].err
            assert "--email" in r["bad_email"].err

        commands = {
            "ci": d.cli(
                "keys create --org acme --project web --name ci --require-tag tier=gold"
                " --require-tag env=prod --json"
            ),
            "users": d.cli("users list --org acme"),
            "outside": d.cli(f"projects create --org {acme['id']} x --allow-model nope", expect=2),
        }
        if extras:
            commands["bad_tag"] = d.cli(
                "keys create --org acme --project web --name x --require-tag tier", expect=2
            )
        r = await gather(commands)
        created = r["ci"].one()
        ci_key, ci_id = created["key"], created["id"]
        assert created["required_model_tags"] == {"tier": "gold", "env": "prod"}
        assert re.search(r"^user_\S+\s+ann@acme\.test\s+Ann\s+False\s", r["users"].out, re.M)
        assert "nope is not allowed by the organization" in r["outside"].err
        if extras:
            assert "key=value" in r["bad_tag"].err
        port = await listening
        # The simulator's model carries no tags: the key may not call it yet.
        assert (await chat(port, ci_key)).status == 403

        updated = (
            await d.cli(
                f"keys update {ci_id} --org acme --no-required-tags --name ci-2"
                " --limit requests_per_minute=100 --json"
            )
        ).one()
        assert (updated["name"], updated["required_model_tags"]) == ("ci-2", {})
        assert updated["limits"] == {"requests_per_minute": 100}
        assert not KEY.search(str(updated))  # an update never shows a secret
        await asyncio.sleep(1.0)  # the invalidation reaches both workers within a second
        assert await statuses(port, ci_key, 4) == [200] * 4

        limited = (
            await d.cli(
                "projects update web --org acme --limit requests_per_day=5"
                f" --model-limit {MODEL}:tokens_per_minute=900 --json"
            )
        ).one()
        assert limited["limits"] == {"requests_per_day": 5}
        assert limited["model_limits"] == {MODEL: {"tokens_per_minute": 900}}
        if extras:
            bad = await d.cli("projects update web --org acme --model-limit nomodel", expect=2)
            assert "MODEL:name=value" in bad.err

        deleted = await d.cli("projects delete web --org acme --json")
        assert deleted.one()["deleted_api_key_ids"] == [ci_id]
        await refused_within_1s(port, ci_key, "invalid_api_key", loop.time())

    r = await gather(
        {
            "audit": d.cli("audit export --org acme"),
            "projects": d.cli("projects list --org acme --json"),
            "again": d.cli("projects delete web --org acme", expect=1),
        }
    )
    assert r["projects"].out == ""
    assert "not found" in r["again"].err
    actions = [e["action"] for e in r["audit"].lines()]
    assert actions[0] == "organization.create"
    # These three ran concurrently, in any order.
    assert sorted(actions[1:4]) == ["organization.update", "project.create", "user.create"]
    assert actions[4:] == [
        "api_key.create",
        "api_key.update",
        "project.update",
        "project.delete",
    ]
