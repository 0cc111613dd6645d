"""Bearer JWTs on the data plane, against a real local JWKS endpoint."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import openai
import pytest

from lockgate.config.spec import JwtIssuerSpec
from lockgate.dataplane.pipeline.authenticate import CredentialAuthenticator
from lockgate.dataplane.pipeline.authorize import PolicyAuthorizer
from lockgate.sim import SimServer
from lockgate.tenancy.jwt import JwtVerifier
from lockgate.tenancy.key_cache import KeyCache, KeyGrant
from tests.support import RunningGateway, gateway_spec, raw_request, running_gateway, sim_model
from tests.tenancy.idp import AUDIENCE, ISSUER, FakeIdp, SigningKey

CHAT = b'{"model":"sim-chat","messages":[{"role":"user","content":"hi"}],"max_tokens":2}'


class NoKeys:
    async def load_key(self, key_id: str) -> KeyGrant | None:
        return None


@pytest.fixture(scope="module")
def signer() -> SigningKey:
    return SigningKey.rsa("rsa-dp")


@pytest.fixture
async def idp(signer: SigningKey) -> AsyncIterator[FakeIdp]:
    server = FakeIdp(keys=[signer])
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def gw(sim: SimServer, idp: FakeIdp) -> AsyncIterator[RunningGateway]:
    verifier = JwtVerifier([JwtIssuerSpec(issuer=ISSUER, audiences=[AUDIENCE], jwks_url=idp.url)])
    authenticator = CredentialAuthenticator(KeyCache(NoKeys()), secrets.token_bytes(32), verifier)
    async with running_gateway(
        gateway_spec([sim_model("sim-chat", sim.base_url)]),
        authenticator=authenticator,
        authorizer=PolicyAuthorizer(),
    ) as running:
        yield running


async def status(gw: RunningGateway, token: str) -> tuple[int, str]:
    response = await raw_request(
        gw.port, "POST", "/v1/chat/completions", CHAT, {"authorization": f"Bearer {token}"}
    )
    return response.status, response.headers.get("x-lockgate-error-code", "")


async def test_member_token_calls_models_with_the_sdk(
    gw: RunningGateway, signer: SigningKey
) -> None:
    async with openai.AsyncOpenAI(
        base_url=gw.base_url, api_key=signer.mint(roles=["member"]), max_retries=0
    ) as client:
        answer = await client.chat.completions.create(
            model="sim-chat", messages=[{"role": "user", "content": "hi"}]
        )
    assert answer.choices


@pytest.mark.parametrize(
    ("over", "expected"),
    [
        ({"roles": ["viewer"]}, (403, "scope_not_allowed")),
        ({"roles": ["auditor"]}, (403, "scope_not_allowed")),
        ({"exp": 1_000}, (401, "token_expired")),
        ({"aud": "someone-else"}, (401, "invalid_audience")),
        ({"iss": "https://evil.example"}, (401, "invalid_issuer")),
    ],
)
async def test_tokens_that_may_not_call_models_are_refused(
    gw: RunningGateway, signer: SigningKey, over: dict[str, object], expected: tuple[int, str]
) -> None:
    assert await status(gw, signer.mint(**over)) == expected


async def test_token_signed_by_an_unknown_key_is_refused(gw: RunningGateway) -> None:
    stranger = SigningKey.rsa("rsa-dp")  # same kid, different key
    assert (await status(gw, stranger.mint()))[0] == 401
