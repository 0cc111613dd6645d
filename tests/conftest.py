from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from lockgate.sim import SimConfig, SimServer
from tests.support import RunningGateway, gateway_spec, running_gateway, sim_model


@pytest.fixture
async def sim() -> AsyncIterator[SimServer]:
    """A fast simulator: small but non-zero timings so streams have real pacing."""
    async with SimServer(
        SimConfig(ttft_ms=1, tokens_per_s=2000, output_tokens=16), host="127.0.0.1", port=0
    ) as server:
        yield server


@pytest.fixture
async def gateway(sim: SimServer) -> AsyncIterator[RunningGateway]:
    """The gateway in front of ``sim`` serving model ``sim-chat`` (alias ``chat-alias``)."""
    model = sim_model("sim-chat", sim.base_url, upstream_model="engine-model")
    model["aliases"] = ["chat-alias"]
    async with running_gateway(gateway_spec([model])) as running:
        yield running
