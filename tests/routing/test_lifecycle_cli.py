"""``lockgate deployments …`` and ``lockgate rollouts …`` against a running gateway's config."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from lockgate.config import GatewaySpec
from tests.controlplane.operator import clean_env
from tests.routing.fleet import FAST, chat, replicas, url
from tests.routing.lifecycle_stack import config_for, stack
from tests.routing.test_registration import members, until


async def lockgate(config: Path, *args: str, expect: int = 0) -> list[dict[str, Any]]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "lockgate",
        *args,
        "--config",
        str(config),
        "--json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(clean_env()),
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == expect, err.decode()
    return [json.loads(line) for line in out.decode().splitlines()]


def versioned_config(tmp_path: Path, *targets: Any) -> tuple[GatewaySpec, Path]:
    v1, v2 = targets
    model = {
        "name": "chat",
        "versions": [
            {"version": "v1", "deployments": [{"name": "v1-r0", "base_url": url(v1)}]},
            {"version": "v2", "deployments": [{"name": "v2-r0", "base_url": url(v2)}]},
        ],
        "rollout": {"candidate": "v2", "percent": 0},
    }
    spec = config_for([model], tmp_path)
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(spec.model_dump(mode="json", exclude_unset=True)))
    assert GatewaySpec.model_validate(yaml.safe_load(config.read_text())) == spec
    return spec, config


# Each command is a process of its own (seconds on a loaded machine): two per test.
async def test_deployments_added_from_the_command_line_reach_the_gateway(tmp_path: Path) -> None:
    async with replicas(FAST, FAST, FAST) as (v1, v2, extra):
        spec, config = versioned_config(tmp_path, v1, v2)
        async with stack(spec, serve_admin=False) as gw:
            added = await lockgate(config, "deployments", "add", "chat@v1", "extra", url(extra))
            assert added[0]["source"] == "admin"
            await until(lambda: members(gw, "chat@v1") == ["v1-r0", "extra"])
            listed = await lockgate(config, "deployments", "list", "--model", "chat@v1")
            assert [(d["name"], d["source"]) for d in listed] == [
                ("v1-r0", "config"),
                ("extra", "admin"),
            ]


async def test_a_rollout_set_from_the_command_line_reaches_the_gateway(tmp_path: Path) -> None:
    async with replicas(FAST, FAST) as (v1, v2):
        spec, config = versioned_config(tmp_path, v1, v2)
        async with stack(spec, serve_admin=False) as gw:
            (state,) = await lockgate(config, "rollouts", "set", "chat", "--percent", "100")
            assert state["percent"] == 100
            assert state["candidate"] == "v2"
            rollout = gw.gateway.dataplane.router.versioned["chat"].rollout
            await until(lambda: rollout.percent == 100)
            assert (await chat(gw.port, "chat")).headers["x-lockgate-model"] == "chat@v2"
            await lockgate(config, "rollouts", "set", "chat", expect=2)  # nothing to change
