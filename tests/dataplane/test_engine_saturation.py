"""An engine that reports queued requests is saturated, whatever the gateway counts.

The model's capacity is configured too high (6) for an engine that runs 2 at
once: without the engines' own figure the gateway would pile 6 onto it. With
``routing.engine_metrics``, each scrape round tells admission how many wait in
the engine, and the model's capacity gate shrinks by that many until they drain.
"""

from __future__ import annotations

import asyncio

from lockgate.admission.admitter import LimitAdmitter
from lockgate.sim import SimConfig, SimServer
from tests.support import gateway_spec, raw_request, running_gateway, sim_model

CHAT = b'{"model":"sim-chat","messages":[{"role":"user","content":"hi"}],"max_tokens":40}'


async def test_engine_queueing_shrinks_the_gate_and_it_grows_back_when_drained() -> None:
    config = SimConfig(ttft_ms=5, tokens_per_s=400, output_tokens=40, capacity=2)
    async with SimServer(config, host="127.0.0.1", port=0) as sim:
        model = sim_model("sim-chat", sim.base_url, capacity=6)
        model["routing"] = {"engine_metrics": {"interval_s": 0.02, "stale_after_s": 1}}
        spec = gateway_spec([model]).model_validate(
            {
                **gateway_spec([model]).model_dump(),
                "admission": {"queue": {"max_queue": 100, "max_wait_s": 30}},
            }
        )
        async with running_gateway(spec) as gw:
            admitter = gw.gateway.dataplane.stages.admitter
            assert isinstance(admitter, LimitAdmitter)
            capacities: list[int] = []

            async def watch() -> None:
                while True:
                    gate = admitter.gates().get("sim-chat")
                    if gate is not None:
                        capacities.append(gate.capacity)
                    await asyncio.sleep(0.005)

            watcher = asyncio.create_task(watch())
            answers = await asyncio.gather(
                *(
                    raw_request(gw.port, "POST", "/v1/chat/completions", CHAT, timeout_s=30)
                    for _ in range(24)
                )
            )
            assert all(a.status == 200 for a in answers)
            # Drained: the next rounds read no queue, and the configured capacity returns.
            for _ in range(200):
                if admitter.gates()["sim-chat"].capacity == 6:
                    break
                await asyncio.sleep(0.01)
            watcher.cancel()
    assert min(capacities) < 6, "the engine's queue never reached admission"
    assert min(capacities) >= 1
    assert admitter.gates()["sim-chat"].capacity == 6
