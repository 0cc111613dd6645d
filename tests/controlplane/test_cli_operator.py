"""Operator commands as an operator runs them: real ``lockgate`` processes against SQLite
and PostgreSQL, next to a real multi-worker gateway that must honour what they change.

Each CLI process costs about a second (imports), so independent commands run
concurrently and one scenario walks the whole life of a key per backend.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from lockgate.tenancy.audit import hash_of
from tests.controlplane.operator import (
    KEY,
    MODEL,
    Deployment,
    entry_of,
    gateway,
    gather,
    only_key,
    refused_within_1s,
    statuses,
)


async def test_operator_lifecycle_reaches_the_running_gateway(
    deployment: Deployment, tmp_path: Path
) -> None:
    d = deployment
    # Checks that do not depend on the database (usage errors, listings, --force)
    # run once, on SQLite, to keep the suite fast.
    extras = d.database_url is None
    loop = asyncio.get_running_loop()
    boot = await d.cli("admin bootstrap")
    root_key = only_key(boot)
    assert "shown only now" in boot.out
    assert re.search(r"role\s+superadmin", boot.out)

    async with gateway(d, tmp_path / "gateway.log") as listening:
        commands = {
            "acme": d.cli("orgs create acme --json"),
            "web": d.cli(f"projects create --org operators web --allow-model {MODEL}"),
        }
        if extras:
            commands["again"] = d.cli("admin bootstrap", expect=1)
        r = await gather(commands)
        port = await listening
        acme = r["acme"].one()
        assert acme["name"] == "acme"
        assert acme["id"].startswith("org_")
        assert re.search(rf"allowed models\s+{MODEL}", r["web"].out)
        if extras:
            assert "already bootstrapped" in r["again"].err
            assert len(r["again"].err.strip().splitlines()) == 1
            assert not KEY.search(r["again"].out + r["again"].err)
        assert await statuses(port, root_key, 2) == [200, 200]

        commands = {
            "ci": d.cli(
                "keys create --org operators --project web --name ci --expires-in 30d"
                " --allow-cidr 127.0.0.1/32 --json"
            )
        }
        if extras:
            commands["mobile"] = d.cli(f"projects create --org {acme['id']} mobile")
        r = await gather(commands)
        created = r["ci"].one()
        ci_key, ci_id = created["key"], created["id"]
        assert KEY.fullmatch(ci_key)
        assert ci_key.startswith(f"lg_{ci_id}_")
        assert created["scopes"] == ["inference"]
        assert created["expires_at"] is not None
        assert await statuses(port, ci_key) == [200] * 8
        assert await statuses(port, root_key) == [200] * 8  # both workers cache both keys

        r = await gather(
            {
                "rotate": d.cli(f"keys rotate {ci_id} --org operators --json"),
                "disable": d.cli(f"keys disable {root_key[:19]} --org operators"),
            }
        )
        await refused_within_1s(port, root_key, "api_key_disabled", loop.time())
        rotated = r["rotate"].one()
        new_ci_key = rotated["key"]
        assert new_ci_key != ci_key
        assert new_ci_key.startswith(f"lg_{ci_id}_")
        assert rotated["previous_expires_at"] is not None
        assert not KEY.search(r["disable"].out)  # a key's id is shown, never its secret
        assert await statuses(port, new_ci_key, 4) == [200] * 4
        assert await statuses(port, ci_key, 4) == [200] * 4  # the old secret, in its grace

        commands = {
            "enable": d.cli(f"keys enable {root_key[3:19]} --org operators"),
            "list": d.cli("keys list --org operators --project web --json"),
        }
        if extras:
            commands["projects"] = d.cli("projects list --org acme --json")
            commands["orgs"] = d.cli("orgs list")
            commands["force"] = d.cli("admin bootstrap --force --json")
        r = await gather(commands)
        enabled_at = loop.time()
        [ci] = r["list"].lines()
        assert ci["id"] == ci_id
        assert ci["status"] == "active"
        assert ci["previous_expires_at"] is not None
        assert not {"secret_hash", "previous_secret_hash", "key"} & set(ci)
        if extras:
            assert [p["name"] for p in r["projects"].lines()] == ["mobile"]
            assert re.search(r"^ID\s+NAME\s+CREATED$", r["orgs"].out, re.MULTILINE)
            assert re.search(rf"^{acme['id']}\s+acme\s", r["orgs"].out, re.MULTILINE)
            second_root = r["force"].one()
            assert second_root["key"] != root_key
            assert second_root["organization_name"] == "operators"
            assert await statuses(port, second_root["key"], 2) == [200] * 2

        await d.cli(f"keys revoke {ci_id} --org operators")
        await refused_within_1s(port, new_ci_key, "api_key_revoked", loop.time())
        assert loop.time() > enabled_at + 1.0
        assert await statuses(port, root_key, 4) == [200] * 4  # enabled again everywhere

    commands = {"verify": d.cli("audit verify"), "export": d.cli("audit export")}
    if extras:
        commands |= {
            "acme": d.cli("audit export --org acme --since 2020-01-01T00:00:00Z"),
            "keys": d.cli("keys list --org operators"),
            "missing": d.cli("keys revoke aaaaaaaaaaaaaaaa --org acme", expect=1),
            "bad": d.cli(
                "keys create --org acme --project mobile --name x --expires-in soon", expect=2
            ),
        }
    r = await gather(commands)
    found = re.search(r"audit chain intact: (\d+) entries", r["verify"].out)
    assert found is not None, r["verify"].out
    lines = r["export"].lines()
    assert len(lines) == int(found.group(1))
    assert [e["seq"] for e in lines] == list(range(1, len(lines) + 1))
    assert all(hash_of(entry_of(e)) == e["entry_hash"] for e in lines)  # re-checkable offline
    assert all(e["actor"].startswith("cli:") for e in lines)
    actions = [e["action"] for e in lines]
    assert actions[:5] == [
        "organization.create",
        "project.create",
        "service_account.create",
        "role_binding.create",
        "api_key.create",
    ]
    assert {"api_key.rotate", "api_key.disabled", "api_key.active", "api_key.revoke"} <= set(
        actions
    )
    if extras:
        acme_lines = r["acme"].lines()
        assert [e["action"] for e in acme_lines] == ["organization.create", "project.create"]
        assert all(e["organization_id"] == acme["id"] for e in acme_lines)
        assert re.search(rf"^{ci_id}\s+ci\s+\S+\s+revoked\s", r["keys"].out, re.MULTILINE)
        assert "not found" in r["missing"].err
        assert len(r["missing"].err.strip().splitlines()) == 1
        assert "--expires-in" in r["bad"].err

    # Tampering: alter one entry (then, on SQLite, delete an earlier one): each is named.
    rotate_seq = next(e["seq"] for e in lines if e["action"] == "api_key.rotate")
    await d.alter_audit_entry(rotate_seq)
    altered = await d.cli("audit verify", expect=1)
    assert re.search(
        rf"broken at seq {rotate_seq} \(api_key\.rotate on api_key:{ci_id}\)", altered.out
    )
    if extras:
        await d.delete_audit_entry(3)
        deleted = (await d.cli("audit verify --json", expect=1)).one()
        assert deleted["intact"] is False
        assert deleted["seq"] == 3
        assert deleted["entry"]["seq"] == 4
        assert deleted["intact_entries"] == 2
