"""Two tenants flooding one saturated model are served in proportion to their weights.

End to end: API keys of two projects (weights 1 and 3, set on the keys), a
model whose one deployment serves one request at once, the simulator, HTTP.
The order in which requests finish is the order the queue granted the slot.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime

from lockgate.admission.spec import LimitSpec
from lockgate.dataplane.pipeline.authenticate import CredentialAuthenticator
from lockgate.dataplane.pipeline.authorize import PolicyAuthorizer
from lockgate.sim import SimConfig, SimServer
from lockgate.tenancy.key_cache import KeyCache, KeyGrant
from lockgate.tenancy.keys import generate_key, hash_secret
from lockgate.tenancy.model import ApiKeyRecord, KeyStatus, Scope
from tests.support import gateway_spec, raw_request, running_gateway, sim_model
from tests.tenancy.grants import grant_for

PEPPER = b"p" * 32
CHAT = b'{"model":"sim-chat","messages":[{"role":"user","content":"hi"}],"max_tokens":2}'
PER_TENANT = 40


class Keys:
    def __init__(self) -> None:
        self.grants: dict[str, KeyGrant] = {}

    async def load_key(self, key_id: str) -> KeyGrant | None:
        return self.grants.get(key_id)

    def add(self, project_id: str, weight: float) -> str:
        key_id, full, secret = generate_key()
        record = ApiKeyRecord(
            id=key_id,
            organization_id="org",
            project_id=project_id,
            name=project_id,
            secret_hash=hash_secret(PEPPER, key_id, secret),
            status=KeyStatus.ACTIVE,
            scopes=(Scope.INFERENCE,),
            allowed_models=(),
            created_at=datetime.now(UTC),
        )
        record = dataclasses.replace(record, limits=LimitSpec(weight=weight))
        self.grants[key_id] = grant_for(record)
        return full


async def test_weights_1_and_3_get_a_quarter_and_three_quarters_of_a_saturated_model() -> None:
    config = SimConfig(ttft_ms=4, tokens_per_s=5000, output_tokens=2)
    async with SimServer(config, host="127.0.0.1", port=0) as sim:
        keys = Keys()
        light, heavy = keys.add("proj-light", 1), keys.add("proj-heavy", 3)
        model = sim_model("sim-chat", sim.base_url, capacity=1)
        spec = gateway_spec([model]).model_validate(
            {
                **gateway_spec([model]).model_dump(),
                "admission": {"queue": {"max_queue": 500, "max_wait_s": 60}},
            }
        )
        authenticator = CredentialAuthenticator(KeyCache(keys), PEPPER)
        async with running_gateway(
            spec, authenticator=authenticator, authorizer=PolicyAuthorizer()
        ) as gw:
            # Warm both keys into the cache, then flood from both at once.
            for key in (light, heavy):
                await raw_request(gw.port, "POST", "/v1/chat/completions", CHAT, auth(key))
            finished: list[str] = []

            async def one(tenant: str, key: str) -> None:
                answer = await raw_request(
                    gw.port, "POST", "/v1/chat/completions", CHAT, auth(key), timeout_s=60
                )
                assert answer.status == 200, answer.body
                finished.append(tenant)

            await asyncio.gather(
                *(one("light", light) for _ in range(PER_TENANT)),
                *(one("heavy", heavy) for _ in range(PER_TENANT)),
            )
    assert sim.engine.peak_running == 1
    # While both tenants still had a backlog (the first 40 grants), weights decide.
    contested = finished[:PER_TENANT]
    heavy_share = contested.count("heavy") / len(contested)
    assert 0.65 <= heavy_share <= 0.85, (heavy_share, finished)


def auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}
