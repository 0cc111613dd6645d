"""Bearer JWT verification against a real JWKS endpoint: what passes, what fails, and why."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives import serialization

from lockgate.config.spec import ClaimMapping, JwtIssuerSpec
from lockgate.errors import AuthenticationFailed
from lockgate.tenancy.jwt import (
    AlgorithmNotAllowed,
    InvalidAudience,
    InvalidClaim,
    InvalidIssuer,
    InvalidSignature,
    JwtVerifier,
    MalformedToken,
    MissingClaim,
    TokenExpired,
    TokenNotYetValid,
    UnknownSigningKey,
)
from tests.tenancy.idp import AUDIENCE, ISSUER, FakeIdp, SigningKey


def spec(idp: FakeIdp, **fields: Any) -> JwtIssuerSpec:
    return JwtIssuerSpec.model_validate(
        {"issuer": ISSUER, "audiences": [AUDIENCE, "other-aud"], "jwks_url": idp.url, **fields}
    )


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    return f"{b64(orjson.dumps(header))}.{b64(orjson.dumps(payload))}.{b64(signature)}"


@pytest.fixture
def verifier(idp: FakeIdp) -> JwtVerifier:
    return JwtVerifier([spec(idp)])


async def test_valid_rs256_token(verifier: JwtVerifier, rsa_key: SigningKey) -> None:
    identity = await verifier.verify(rsa_key.mint())
    assert identity.issuer == ISSUER
    assert identity.subject == "user-1"
    assert identity.organization_id == "org-1"
    assert identity.project_id == "proj-1"
    assert identity.roles == ("member",)
    assert abs(identity.expires_at.timestamp() - (time.time() + 600)) < 5
    assert identity.claims["aud"] == AUDIENCE


async def test_valid_es256_token_and_any_listed_audience(
    verifier: JwtVerifier, ec_key: SigningKey
) -> None:
    identity = await verifier.verify(ec_key.mint(aud=["someone-else", "other-aud"]))
    assert identity.subject == "user-1"


@pytest.mark.parametrize(
    ("claims", "error", "code"),
    [
        ({"exp": int(time.time()) - 120}, TokenExpired, "token_expired"),
        ({"nbf": int(time.time()) + 600}, TokenNotYetValid, "token_not_yet_valid"),
        ({"iat": int(time.time()) + 600}, TokenNotYetValid, "token_not_yet_valid"),
        ({"aud": "not-lockgate"}, InvalidAudience, "invalid_audience"),
        ({"aud": None}, InvalidAudience, "invalid_audience"),
        ({"exp": None}, MissingClaim, "missing_claim"),
        ({"exp": "tomorrow"}, MalformedToken, "malformed_token"),
        ({"sub": None}, MissingClaim, "missing_claim"),
    ],
)
async def test_claim_checks(
    verifier: JwtVerifier,
    rsa_key: SigningKey,
    claims: dict[str, Any],
    error: type[AuthenticationFailed],
    code: str,
) -> None:
    with pytest.raises(error) as caught:
        await verifier.verify(rsa_key.mint(**claims))
    assert caught.value.code == code
    assert caught.value.status == 401
    assert caught.value.type == "authentication_error"


async def test_leeway_accepts_slightly_expired(verifier: JwtVerifier, rsa_key: SigningKey) -> None:
    await verifier.verify(rsa_key.mint(exp=int(time.time()) - 5))  # default leeway 30 s


@pytest.mark.parametrize("issuer", [ISSUER + "/", "https://evil.example.test", "", None])
async def test_wrong_or_unknown_issuer(
    verifier: JwtVerifier, rsa_key: SigningKey, issuer: str | None
) -> None:
    with pytest.raises(InvalidIssuer) as caught:
        await verifier.verify(rsa_key.mint(iss=issuer))
    assert caught.value.code == "invalid_issuer"


async def test_non_string_issuer(verifier: JwtVerifier, rsa_key: SigningKey) -> None:
    with pytest.raises(InvalidIssuer):
        await verifier.verify(forge({"alg": "RS256", "kid": rsa_key.kid}, {"iss": 42}))


async def test_issuer_selection_does_not_lend_keys(idp: FakeIdp, rsa_key: SigningKey) -> None:
    """A token claiming issuer B but signed with issuer A's key is checked against B's keys."""
    other = FakeIdp(keys=[SigningKey.ec("b-1")])
    await other.start()
    try:
        verifier = JwtVerifier([spec(idp), spec(other, issuer="https://b.example.test")])
        with pytest.raises(UnknownSigningKey):
            await verifier.verify(rsa_key.mint(iss="https://b.example.test"))
    finally:
        await other.stop()


async def test_tampered_payload(verifier: JwtVerifier, rsa_key: SigningKey) -> None:
    header, payload, signature = rsa_key.mint().split(".")
    claims = orjson.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["org_id"] = "org-victim"
    tampered = f"{header}.{b64(orjson.dumps(claims))}.{signature}"
    with pytest.raises(InvalidSignature) as caught:
        await verifier.verify(tampered)
    assert caught.value.code == "invalid_signature"


async def test_signature_from_another_key_with_same_kid(
    verifier: JwtVerifier, rsa_key: SigningKey
) -> None:
    impostor = SigningKey.rsa(rsa_key.kid)
    with pytest.raises(InvalidSignature):
        await verifier.verify(impostor.mint())


async def test_alg_none_refused(verifier: JwtVerifier, rsa_key: SigningKey, idp: FakeIdp) -> None:
    payload = orjson.loads(base64.urlsafe_b64decode(rsa_key.mint().split(".")[1] + "=="))
    with pytest.raises(AlgorithmNotAllowed) as caught:
        await verifier.verify(forge({"alg": "none", "kid": rsa_key.kid}, payload))
    assert caught.value.code == "algorithm_not_allowed"
    with pytest.raises(AlgorithmNotAllowed):
        await verifier.verify(forge({"alg": "None", "kid": rsa_key.kid}, payload))
    assert idp.requests == 0  # refused before any key was needed


async def test_hs256_signed_with_rsa_public_key_refused(
    verifier: JwtVerifier, rsa_key: SigningKey
) -> None:
    """The classic key-confusion attack: the public PEM used as an HMAC secret."""
    pem = rsa_key.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    now = int(time.time())
    payload = {"iss": ISSUER, "aud": AUDIENCE, "sub": "attacker", "exp": now + 600}
    for header in ({"alg": "HS256", "kid": rsa_key.kid}, {"alg": "HS256"}):
        unsigned = forge(header, payload).rsplit(".", 1)[0]
        signature = hmac.new(pem, unsigned.encode(), hashlib.sha256).digest()
        with pytest.raises(AlgorithmNotAllowed):
            await verifier.verify(f"{unsigned}.{b64(signature)}")


async def test_alg_not_on_issuer_allow_list(idp: FakeIdp, ec_key: SigningKey) -> None:
    verifier = JwtVerifier([spec(idp, algorithms=["RS256"])])
    with pytest.raises(AlgorithmNotAllowed):
        await verifier.verify(ec_key.mint())


async def test_header_alg_must_match_the_key(verifier: JwtVerifier, rsa_key: SigningKey) -> None:
    """An ES256 header naming the RSA key's kid finds no (kid, alg) key."""
    _, payload, signature = rsa_key.mint().split(".")
    forged_header = b64(orjson.dumps({"alg": "ES256", "kid": rsa_key.kid}))
    with pytest.raises(UnknownSigningKey):
        await verifier.verify(f"{forged_header}.{payload}.{signature}")


@pytest.mark.parametrize(
    "token",
    [
        "",
        "not-a-jwt",
        "a.b.c",
        "a.b.c.d.e",  # JWE compact form
        "eyJhbGciOiJSUzI1NiJ9.!!!.sig",
        "x" * 20_000,
        forge({"alg": "RS256", "kid": 7}, {"iss": ISSUER}),
        forge({"alg": "RS256", "kid": "k" * 300}, {"iss": ISSUER}),
        b64(b"[1,2]") + "." + b64(b"{}") + ".",
        b64(b'{"alg":"RS256"}') + "." + b64(b"[]") + ".",
    ],
    ids=lambda t: t[:24],
)
async def test_malformed_tokens(verifier: JwtVerifier, token: str) -> None:
    with pytest.raises(MalformedToken) as caught:
        await verifier.verify(token)
    assert caught.value.code == "malformed_token"


async def test_messages_echo_nothing_from_the_token(
    verifier: JwtVerifier, rsa_key: SigningKey
) -> None:
    hostile = "https://evil.test/\r\n<script>alert(1)</script>"
    with pytest.raises(InvalidIssuer) as caught:
        await verifier.verify(rsa_key.mint(iss=hostile))
    assert "evil" not in caught.value.message
    with pytest.raises(UnknownSigningKey) as unknown:
        await verifier.verify(rsa_key.mint(kid="kid-<script>"))
    assert "script" not in unknown.value.message


async def test_claim_mapping_custom_names_and_string_roles(
    idp: FakeIdp, rsa_key: SigningKey
) -> None:
    mapping = ClaimMapping(
        subject="email",
        organization="tenant",
        project="https://lockgate.example/project",
        roles="scope",
    )
    verifier = JwtVerifier([spec(idp, claims=mapping.model_dump())])
    token = rsa_key.mint(
        {
            "email": "ada@example.test",
            "tenant": 42,
            "https://lockgate.example/project": "p-7",
            "scope": "org_admin, member  viewer,member",
        }
    )
    identity = await verifier.verify(token)
    assert identity.subject == "ada@example.test"
    assert identity.organization_id == "42"
    assert identity.project_id == "p-7"
    assert identity.roles == ("org_admin", "member", "viewer")


async def test_claim_mapping_nested_path_and_absent_optional_claims(
    idp: FakeIdp, rsa_key: SigningKey
) -> None:
    verifier = JwtVerifier([spec(idp, claims={"roles": "realm_access.roles"})])
    identity = await verifier.verify(
        rsa_key.mint({"realm_access": {"roles": ["viewer"]}}, org_id=None, project_id=None)
    )
    assert identity.roles == ("viewer",)
    assert identity.organization_id is None
    assert identity.project_id is None


@pytest.mark.parametrize(
    "claims",
    [{"roles": 5}, {"roles": ["a", 1]}, {"org_id": {"id": 1}}, {"sub": True}, {"exp": 10**30}],
)
async def test_unusable_claim_values(
    verifier: JwtVerifier, rsa_key: SigningKey, claims: dict[str, Any]
) -> None:
    with pytest.raises(InvalidClaim) as caught:
        await verifier.verify(rsa_key.mint(claims))
    assert caught.value.code == "invalid_claim"


def test_configuration_errors(idp: FakeIdp) -> None:
    with pytest.raises(ValueError, match="configured twice"):
        JwtVerifier([spec(idp), spec(idp)])
    # model_construct skips validation: the verifier still refuses symmetric algorithms.
    sneaky = spec(idp).model_copy(update={"algorithms": ["RS256", "HS256"]})
    with pytest.raises(ValueError, match="HS256"):
        JwtVerifier([sneaky])
    with pytest.raises(ValueError, match="jwks_url"):
        JwtVerifier([spec(idp).model_copy(update={"jwks_url": "ftp://idp.test/keys"})])
