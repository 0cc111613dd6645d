"""``lockgate demo``: a simulated engine and the gateway in one process, ready to try."""

from __future__ import annotations

import asyncio
import tempfile

from lockgate.config import GatewaySpec, RuntimeConfig, resolve
from lockgate.controlplane.actions import SYSTEM, AdminActions
from lockgate.invalidation.inprocess import InProcessBus
from lockgate.serve import new_event_loop, prepare, run_gateway
from lockgate.sim import SimConfig, SimServer
from lockgate.startup import database_url, resolve_pepper
from lockgate.store.store import Store

DEMO_MODEL = "demo-chat"


def _instructions(port: int, key: str) -> str:
    base = f"http://127.0.0.1:{port}"
    return f"""
Lockgate demo is running: gateway {base} -> simulated engine (model '{DEMO_MODEL}').
A demo organisation, project and API key were created (state is temporary):

  LOCKGATE_API_KEY={key}

Try it with curl:
  curl -s {base}/v1/chat/completions -H 'content-type: application/json' \\
    -H 'authorization: Bearer {key}' \\
    -d '{{"model": "{DEMO_MODEL}", "messages": [{{"role": "user", "content": "Hello!"}}]}}'

Or with the openai SDK (pip install openai):
  from openai import OpenAI
  client = OpenAI(base_url="{base}/v1", api_key="{key}")
  for chunk in client.chat.completions.create(
      model="{DEMO_MODEL}", messages=[{{"role": "user", "content": "Hello!"}}], stream=True
  ):
      print(chunk.choices[0].delta.content or "", end="", flush=True)

Press Ctrl-C to stop.
"""


def _spec(port: int, data_dir: str, engine_url: str) -> GatewaySpec:
    return GatewaySpec.model_validate(
        {
            "server": {"host": "127.0.0.1", "port": port, "data_dir": data_dir},
            "models": [
                {
                    "name": DEMO_MODEL,
                    "aliases": ["gpt-4o-mini"],
                    "deployments": [{"name": "sim-local", "base_url": engine_url}],
                }
            ],
        }
    )


async def _provision(config: RuntimeConfig) -> str:
    """A demo tenant with one inference key; returns the key (shown once)."""
    store = await Store.open(database_url(config))
    try:
        actions = AdminActions(store, InProcessBus(), resolve_pepper(config))
        org = await actions.create_organization(SYSTEM, "demo")
        project = await actions.create_project(SYSTEM, org.id, "demo")
        _, key = await actions.create_api_key(
            SYSTEM, organization_id=org.id, project_id=project.id, name="demo key"
        )
        return key
    finally:
        await store.close()


async def _demo(port: int, data_dir: str) -> int:
    async with SimServer(SimConfig(), host="127.0.0.1", port=0) as sim:
        config = resolve(_spec(port, data_dir, sim.base_url), source="<demo>")
        key = await _provision(config)

        def ready(bound: int) -> None:
            print(_instructions(bound, key), flush=True)

        return await run_gateway(config, on_ready=ready)


def run_demo(*, port: int) -> int:
    """The demo keeps its state in a temporary directory, gone when it stops."""
    with tempfile.TemporaryDirectory(prefix="lockgate-demo-") as data_dir:
        prepare(resolve(_spec(port, data_dir, "http://127.0.0.1:1/v1"), source="<demo>"))
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            return runner.run(_demo(port, data_dir))
