"""The data plane refuses missing, unknown, expired, revoked and wrong-model credentials.

Keys come from an in-memory lookup here; the store-backed lookup has its own
tests. Everything else is real: HTTP over loopback, the openai SDK, the simulator.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import openai
import pytest

from lockgate.dataplane.pipeline.authenticate import CredentialAuthenticator
from lockgate.dataplane.pipeline.authorize import PolicyAuthorizer
from lockgate.sim import SimServer
from lockgate.tenancy.key_cache import KeyCache, KeyGrant
from lockgate.tenancy.keys import generate_key, hash_secret
from lockgate.tenancy.model import ApiKeyRecord, KeyStatus, Scope
from tests.support import RunningGateway, gateway_spec, raw_request, running_gateway, sim_model
from tests.tenancy.grants import grant_for

PEPPER = secrets.token_bytes(32)
CHAT = b'{"model":"sim-chat","messages":[{"role":"user","content":"hi"}],"max_tokens":3}'


class MemoryKeys:
    """A KeyLookup over a dict, counting loads."""

    def __init__(self) -> None:
        self.grants: dict[str, KeyGrant] = {}
        self.loads = 0

    async def load_key(self, key_id: str) -> KeyGrant | None:
        self.loads += 1
        return self.grants.get(key_id)

    def add(
        self,
        project_models: tuple[str, ...] = (),
        organization_models: tuple[str, ...] = (),
        service_account_disabled: bool = False,
        **fields: object,
    ) -> str:
        key_id, full, secret = generate_key()
        record = ApiKeyRecord(
            id=key_id,
            organization_id="org_a",
            project_id="proj_a",
            name="test",
            secret_hash=hash_secret(PEPPER, key_id, secret),
            status=KeyStatus.ACTIVE,
            scopes=(Scope.INFERENCE,),
            allowed_models=(),
            created_at=datetime.now(UTC),
        )
        record = dataclasses.replace(record, **fields)  # type: ignore[arg-type]
        self.grants[key_id] = grant_for(
            record,
            project_models=project_models,
            organization_models=organization_models,
            service_account_disabled=service_account_disabled,
        )
        return full


@pytest.fixture
def keys() -> MemoryKeys:
    return MemoryKeys()


@pytest.fixture
async def cache(keys: MemoryKeys) -> KeyCache:
    return KeyCache(keys, unknown_loads_per_s=1000)


@pytest.fixture
async def gw(sim: SimServer, cache: KeyCache) -> AsyncIterator[RunningGateway]:
    models = [sim_model("sim-chat", sim.base_url), sim_model("other", sim.base_url)]
    async with running_gateway(
        gateway_spec(models),
        authenticator=CredentialAuthenticator(cache, PEPPER),
        authorizer=PolicyAuthorizer(),
    ) as running:
        yield running


async def call(
    gw: RunningGateway, key: str | None, body: bytes = CHAT
) -> tuple[int, dict[str, str], bytes]:
    headers = {"authorization": f"Bearer {key}"} if key is not None else {}
    response = await raw_request(gw.port, "POST", "/v1/chat/completions", body, headers)
    return response.status, response.headers, response.body


async def test_valid_key_works_with_the_sdk(gw: RunningGateway, keys: MemoryKeys) -> None:
    key = keys.add()
    async with openai.AsyncOpenAI(base_url=gw.base_url, api_key=key, max_retries=0) as client:
        answer = await client.chat.completions.create(
            model="sim-chat", messages=[{"role": "user", "content": "hi"}]
        )
    assert answer.choices[0].message.content


async def test_missing_key_is_401_with_openai_shape(gw: RunningGateway) -> None:
    status, headers, body = await call(gw, None)
    assert status == 401
    assert headers["x-lockgate-error-code"] == "missing_api_key"
    assert b'"type":"authentication_error"' in body


@pytest.mark.parametrize(
    "credential",
    [
        "sk-not-ours",
        "lg_" + "a" * 16 + "_" + "b" * 52,  # well-formed, unknown id
        "lg_' OR 1=1 --",
        "x" * 10_000,
    ],
)
async def test_unknown_or_garbage_keys_are_401(gw: RunningGateway, credential: str) -> None:
    status, headers, _ = await call(gw, credential)
    assert status == 401
    assert headers["x-lockgate-error-code"] == "invalid_api_key"


async def test_wrong_secret_for_a_real_key_id_is_401_and_reveals_nothing(
    gw: RunningGateway, keys: MemoryKeys
) -> None:
    key = keys.add(status=KeyStatus.REVOKED)
    forged = key[:-4] + ("aaaa" if not key.endswith("aaaa") else "qqqq")
    status, headers, _ = await call(gw, forged)
    assert status == 401
    assert headers["x-lockgate-error-code"] == "invalid_api_key"  # not "revoked"


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"status": KeyStatus.REVOKED}, "api_key_revoked"),
        ({"status": KeyStatus.DISABLED}, "api_key_disabled"),
        ({"expires_at": datetime.now(UTC) - timedelta(seconds=1)}, "api_key_expired"),
    ],
)
async def test_unusable_keys_are_401_with_their_reason(
    gw: RunningGateway, keys: MemoryKeys, fields: dict[str, object], code: str
) -> None:
    status, headers, _ = await call(gw, keys.add(**fields))
    assert status == 401
    assert headers["x-lockgate-error-code"] == code


async def test_key_limited_to_other_models_is_403(gw: RunningGateway, keys: MemoryKeys) -> None:
    key = keys.add(allowed_models=("other",))
    status, headers, _ = await call(gw, key)
    assert status == 403
    assert headers["x-lockgate-error-code"] == "model_not_allowed"
    ok = b'{"model":"other","messages":[{"role":"user","content":"hi"}],"max_tokens":3}'
    assert (await call(gw, key, ok))[0] == 200


async def test_project_allow_list_caps_the_key(gw: RunningGateway, keys: MemoryKeys) -> None:
    key = keys.add(project_models=("other",), allowed_models=("sim-chat", "other"))
    assert (await call(gw, key))[0] == 403


OTHER = b'{"model":"other","messages":[{"role":"user","content":"hi"}],"max_tokens":3}'


@pytest.mark.parametrize(
    ("lists", "chat", "other"),
    [
        ({"organization_models": ("other",)}, 403, 200),  # the ceiling alone restricts
        ({"organization_models": ("other",), "allowed_models": ("sim-chat", "other")}, 403, 200),
        ({"organization_models": ("sim-chat", "other"), "project_models": ("other",)}, 403, 200),
        ({"organization_models": ("sim-chat",), "project_models": ("other",)}, 403, 403),
        ({"organization_models": ("sim-chat", "other")}, 200, 200),
    ],
)
async def test_organization_ceiling_intersects_project_and_key(
    gw: RunningGateway, keys: MemoryKeys, lists: dict[str, tuple[str, ...]], chat: int, other: int
) -> None:
    key = keys.add(**lists)  # type: ignore[arg-type]
    assert (await call(gw, key))[0] == chat
    assert (await call(gw, key, OTHER))[0] == other


async def test_keys_of_a_disabled_service_account_are_refused(
    gw: RunningGateway, keys: MemoryKeys
) -> None:
    status, headers, body = await call(gw, keys.add(service_account_disabled=True))
    assert status == 401
    assert headers["x-lockgate-error-code"] == "api_key_disabled"
    assert b"service account is disabled" in body
    # Without the secret nothing is told: the refusal needs the right key first.
    key = keys.add(service_account_disabled=True)
    status, headers, _ = await call(gw, key[:-4] + "aaaa")
    assert headers["x-lockgate-error-code"] == "invalid_api_key"


async def test_key_without_inference_scope_is_403(gw: RunningGateway, keys: MemoryKeys) -> None:
    status, headers, _ = await call(gw, keys.add(scopes=(Scope.ADMIN,)))
    assert status == 403
    assert headers["x-lockgate-error-code"] == "scope_not_allowed"


async def test_network_conditions(gw: RunningGateway, keys: MemoryKeys) -> None:
    assert (await call(gw, keys.add(allowed_cidrs=("127.0.0.0/8",))))[0] == 200
    status, headers, _ = await call(gw, keys.add(allowed_cidrs=("10.0.0.0/8",)))
    assert status == 403
    assert headers["x-lockgate-error-code"] == "network_not_allowed"


async def test_rotated_key_old_secret_works_in_grace_then_stops(
    gw: RunningGateway, keys: MemoryKeys, cache: KeyCache
) -> None:
    old = keys.add()
    key_id = old.split("_")[1]
    new_secret = generate_key()[2]
    new = f"lg_{key_id}_{new_secret}"
    current = keys.grants[key_id].key
    rotated = dataclasses.replace(
        current,
        secret_hash=hash_secret(PEPPER, key_id, new_secret),
        previous_secret_hash=current.secret_hash,
        previous_expires_at=datetime.now(UTC) + timedelta(minutes=5),
    )
    keys.grants[key_id] = grant_for(rotated)
    cache.invalidate(key_id)  # what the invalidation bus does on every replica
    assert (await call(gw, new))[0] == 200
    assert (await call(gw, old))[0] == 200  # grace period
    keys.grants[key_id] = grant_for(
        dataclasses.replace(rotated, previous_expires_at=datetime.now(UTC))
    )
    cache.invalidate(key_id)
    assert (await call(gw, old))[0] == 401
    assert (await call(gw, new))[0] == 200


async def test_steady_state_costs_no_lookups(gw: RunningGateway, keys: MemoryKeys) -> None:
    key = keys.add()
    for _ in range(20):
        assert (await call(gw, key))[0] == 200
    assert keys.loads == 1


async def test_unknown_key_model_probe_gets_401_before_404(gw: RunningGateway) -> None:
    body = b'{"model":"secret-model","messages":[{"role":"user","content":"hi"}]}'
    assert (await call(gw, None, body))[0] == 401


async def test_model_tag_conditions(sim: SimServer, keys: MemoryKeys, cache: KeyCache) -> None:
    open_model = sim_model("sim-chat", sim.base_url) | {"tags": {"classification": "unclassified"}}
    secret_model = sim_model("other", sim.base_url) | {"tags": {"classification": "secret"}}
    async with running_gateway(
        gateway_spec([open_model, secret_model]),
        authenticator=CredentialAuthenticator(cache, PEPPER),
        authorizer=PolicyAuthorizer(),
    ) as tagged:
        key = keys.add(required_model_tags={"classification": "unclassified"})
        assert (await call(tagged, key))[0] == 200
        other = b'{"model":"other","messages":[{"role":"user","content":"hi"}],"max_tokens":3}'
        status, headers, body = await call(tagged, key, other)
        assert status == 403
        assert headers["x-lockgate-error-code"] == "model_not_allowed"
        assert b"classification=unclassified" in body
        untagged_key = keys.add()
        assert (await call(tagged, untagged_key, other))[0] == 200
