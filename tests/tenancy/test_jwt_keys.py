"""JWKS caching: rotation, rate-limited refetch, outages, files, and what keys are usable."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from lockgate.config.spec import JwtIssuerSpec
from lockgate.tenancy.jwt import (
    InvalidSignature,
    JwtVerifier,
    SigningKeysUnavailable,
    UnknownSigningKey,
)
from lockgate.tenancy.jwt_keys import JwksError, _UrlSource, parse_jwks
from tests.tenancy.idp import AUDIENCE, ISSUER, Clock, FakeIdp, SigningKey

INTERVAL_S = 30.0


def url_spec(idp: FakeIdp, **fields: Any) -> JwtIssuerSpec:
    return JwtIssuerSpec(issuer=ISSUER, audiences=[AUDIENCE], jwks_url=idp.url, **fields)


def make_verifier(idp: FakeIdp, clock: Clock, **fields: Any) -> JwtVerifier:
    return JwtVerifier([url_spec(idp, **fields)], min_refetch_interval_s=INTERVAL_S, clock=clock)


async def test_keys_are_fetched_once_and_cached(
    idp: FakeIdp, clock: Clock, rsa_key: SigningKey, ec_key: SigningKey
) -> None:
    verifier = make_verifier(idp, clock)
    for _ in range(5):
        await verifier.verify(rsa_key.mint())
        await verifier.verify(ec_key.mint())
    assert idp.requests == 1
    clock.advance(301)  # past jwks_cache_s: the next token refreshes the cache
    await verifier.verify(rsa_key.mint())
    assert idp.requests == 2


async def test_concurrent_cold_start_fetches_once(
    idp: FakeIdp, clock: Clock, rsa_key: SigningKey
) -> None:
    verifier = make_verifier(idp, clock)
    token = rsa_key.mint()
    identities = await asyncio.gather(*(verifier.verify(token) for _ in range(20)))
    assert {i.subject for i in identities} == {"user-1"}
    assert idp.requests == 1


async def test_key_rotation(
    idp: FakeIdp, clock: Clock, rsa_key: SigningKey, rsa_key_2: SigningKey
) -> None:
    verifier = make_verifier(idp, clock)
    old_token = rsa_key.mint()
    await verifier.verify(old_token)
    assert idp.requests == 1

    idp.keys = [rsa_key_2]  # the issuer rotates: the old key is no longer published
    clock.advance(INTERVAL_S)
    await verifier.verify(rsa_key_2.mint())  # unknown kid: one refetch, then it verifies
    assert idp.requests == 2
    await verifier.verify(rsa_key_2.mint())
    await verifier.verify(old_token)  # withdrawn, but still within its cache lifetime
    assert idp.requests == 2

    clock.advance(300)  # the withdrawn key's cache lifetime is over
    with pytest.raises(UnknownSigningKey):
        await verifier.verify(rsa_key.mint())
    await verifier.verify(rsa_key_2.mint())


async def test_flood_of_unknown_kids_is_rate_limited(
    idp: FakeIdp, clock: Clock, rsa_key: SigningKey
) -> None:
    verifier = make_verifier(idp, clock)
    await verifier.verify(rsa_key.mint())

    async def attempt() -> None:
        with pytest.raises(UnknownSigningKey) as caught:
            await verifier.verify(rsa_key.mint(kid=uuid.uuid4().hex))
        assert caught.value.code == "unknown_signing_key"

    for _ in range(50):
        await attempt()
    await asyncio.gather(*(attempt() for _ in range(50)))
    assert idp.requests == 1  # the interval since the first fetch has not passed

    clock.advance(INTERVAL_S)
    await asyncio.gather(*(attempt() for _ in range(50)))
    for _ in range(50):
        await attempt()
    assert idp.requests == 2  # one refetch per interval, however many garbage kids
    await verifier.verify(rsa_key.mint())  # known keys unaffected throughout


async def test_outage_keeps_serving_cached_keys(
    idp: FakeIdp, clock: Clock, rsa_key: SigningKey, caplog: pytest.LogCaptureFixture
) -> None:
    verifier = make_verifier(idp, clock)
    await verifier.verify(rsa_key.mint())
    idp.status = 500
    clock.advance(301)
    with caplog.at_level(logging.WARNING, logger="lockgate.tenancy.jwt"):
        await verifier.verify(rsa_key.mint())  # refresh fails: stale keys still serve
    assert idp.requests == 2
    assert "HTTP 500" in caplog.text
    assert "keeping cached keys" in caplog.text
    await verifier.verify(rsa_key.mint())
    assert idp.requests == 2  # no retry before the interval passes

    await idp.stop()  # connection refused from now on
    clock.advance(INTERVAL_S)
    await verifier.verify(rsa_key.mint())


async def test_outage_without_cache_is_a_clear_503(
    idp: FakeIdp, clock: Clock, rsa_key: SigningKey
) -> None:
    idp.status = 503
    verifier = make_verifier(idp, clock)
    for _ in range(3):
        with pytest.raises(SigningKeysUnavailable) as caught:
            await verifier.verify(rsa_key.mint())
        assert caught.value.status == 503
        assert caught.value.code == "identity_provider_unavailable"
    assert idp.requests == 1  # failures are rate-limited too
    idp.status = 200
    clock.advance(INTERVAL_S)
    await verifier.verify(rsa_key.mint())  # recovers on the next allowed attempt


async def test_unreachable_endpoint(clock: Clock, rsa_key: SigningKey) -> None:
    down = FakeIdp()
    await down.start()
    await down.stop()  # the port is now closed
    verifier = make_verifier(down, clock)
    with pytest.raises(SigningKeysUnavailable):
        await verifier.verify(rsa_key.mint())


async def test_hanging_endpoint_times_out(idp: FakeIdp, clock: Clock, rsa_key: SigningKey) -> None:
    idp.is_hanging = True
    verifier = JwtVerifier([url_spec(idp)], fetch_timeout_s=0.2, clock=clock)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(SigningKeysUnavailable):
        await verifier.verify(rsa_key.mint())
    assert loop.time() - started < 2.0


async def test_oversized_or_invalid_documents_are_refused(
    idp: FakeIdp, clock: Clock, rsa_key: SigningKey
) -> None:
    idp.body = b'{"keys": [' + b" " * (300 * 1024) + b"]}"
    verifier = make_verifier(idp, clock)
    with pytest.raises(SigningKeysUnavailable):
        await verifier.verify(rsa_key.mint())
    idp.body = b"<html>login</html>"
    clock.advance(INTERVAL_S)
    with pytest.raises(SigningKeysUnavailable):
        await verifier.verify(rsa_key.mint())
    assert idp.requests == 2


async def test_cancelled_fetch_does_not_block_the_next_attempt(
    idp: FakeIdp, clock: Clock, rsa_key: SigningKey
) -> None:
    idp.is_hanging = True
    verifier = make_verifier(idp, clock)
    task = asyncio.ensure_future(verifier.verify(rsa_key.mint()))
    await idp.request_seen.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    idp.is_hanging = False
    await verifier.verify(rsa_key.mint())  # no 30 s penalty for a caller that went away


async def test_jwks_file_issuer(
    tmp_path: Path, clock: Clock, rsa_key: SigningKey, rsa_key_2: SigningKey
) -> None:
    path = tmp_path / "jwks.json"
    path.write_bytes(orjson.dumps({"keys": [rsa_key.jwk()]}))
    spec = JwtIssuerSpec(issuer=ISSUER, audiences=[AUDIENCE], jwks_file=str(path))
    verifier = JwtVerifier([spec], min_refetch_interval_s=INTERVAL_S, clock=clock)
    assert (await verifier.verify(rsa_key.mint())).subject == "user-1"
    with pytest.raises(InvalidSignature):
        await verifier.verify(SigningKey.rsa(rsa_key.kid).mint())

    path.write_bytes(orjson.dumps({"keys": [rsa_key.jwk(), rsa_key_2.jwk()]}))
    clock.advance(INTERVAL_S)
    await verifier.verify(rsa_key_2.mint())  # a replaced file is picked up like a rotation


async def test_missing_jwks_file(tmp_path: Path, rsa_key: SigningKey) -> None:
    spec = JwtIssuerSpec(
        issuer=ISSUER, audiences=[AUDIENCE], jwks_file=str(tmp_path / "absent.json")
    )
    with pytest.raises(SigningKeysUnavailable):
        await JwtVerifier([spec]).verify(rsa_key.mint())


async def test_token_without_kid_uses_the_only_fitting_key(
    idp: FakeIdp, clock: Clock, rsa_key: SigningKey, ec_key: SigningKey, rsa_key_2: SigningKey
) -> None:
    verifier = make_verifier(idp, clock)
    no_kid = rsa_key.mint(has_kid=False)
    await verifier.verify(no_kid)
    idp.keys = [rsa_key, rsa_key_2, ec_key]
    clock.advance(301)
    with pytest.raises(UnknownSigningKey):  # two RSA keys: ambiguous, so refused
        await verifier.verify(no_kid)


# -- which JWKs are usable --------------------------------------------------------
def test_parse_jwks_keeps_only_fitting_signature_keys(
    rsa_key: SigningKey, ec_key: SigningKey
) -> None:
    weak = SigningKey.rsa("weak", bits=1024)
    document = orjson.dumps(
        {
            "keys": [
                rsa_key.jwk(),
                ec_key.jwk(),
                {"kty": "oct", "kid": "shared", "k": "c2VjcmV0", "alg": "HS256"},
                rsa_key.jwk(kid="enc", use="enc"),
                rsa_key.jwk(kid="declared-es", alg="ES256"),
                weak.jwk(),
                {"kty": "RSA", "kid": "broken", "n": "AQAB"},
                "not-a-jwk",
                rsa_key.jwk(kid=17),
            ]
        }
    )
    keys = parse_jwks(document, ["RS256", "ES256"])
    assert set(keys) == {("rsa-1", "RS256"), ("ec-1", "ES256")}


@pytest.mark.parametrize("field", ["kty", "crv", "alg", "kid", "use", "x", "y"])
@pytest.mark.parametrize("value", [5, [], {}, None, "", ["ES256"], True])
def test_parse_jwks_survives_odd_member_values(
    ec_key: SigningKey, field: str, value: object
) -> None:
    """Hostile or broken JWKS content makes a key unusable; it never raises anything else."""
    try:
        keys = parse_jwks(orjson.dumps({"keys": [{**ec_key.jwk(), field: value}]}), ["ES256"])
    except JwksError:
        return
    assert set(keys) <= {("ec-1", "ES256"), (None, "ES256")}


def test_parse_jwks_binds_alg_less_keys_to_allowed_algorithms(rsa_key: SigningKey) -> None:
    jwk = {k: v for k, v in rsa_key.jwk().items() if k != "alg"}
    keys = parse_jwks(orjson.dumps({"keys": [jwk]}), ["PS256", "RS256", "ES256"])
    assert set(keys) == {("rsa-1", "PS256"), ("rsa-1", "RS256")}
    assert {k.algorithm_name for k in keys.values()} == {"PS256", "RS256"}


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        (b"not json", "not valid JSON"),
        (b"[]", "no 'keys' list"),
        (b'{"keys": {}}', "no 'keys' list"),
        (b'{"keys": []}', "no usable key"),
    ],
)
def test_parse_jwks_errors(document: bytes, reason: str) -> None:
    with pytest.raises(JwksError, match=reason):
        parse_jwks(document, ["RS256"])


def test_url_parsing() -> None:
    https = _UrlSource("https://login.example.test/realms/x/certs?v=1", 5.0)
    assert (https.scheme, https.host, https.port) == ("https", "login.example.test", 443)
    assert https.request.startswith(b"GET /realms/x/certs?v=1 HTTP/1.1\r\n")
    assert b"host: login.example.test\r\n" in https.request
    plain = _UrlSource("http://127.0.0.1:8081", 5.0)
    assert (plain.scheme, plain.port) == ("http", 8081)
    assert plain.request.startswith(b"GET / HTTP/1.1\r\n")
    for bad in ("ftp://x/keys", "http://user:pw@x/keys", "http:///keys", "http://x/a b"):
        with pytest.raises(ValueError, match="jwks_url"):
            _UrlSource(bad, 5.0)


# -- https ------------------------------------------------------------------------
def self_signed_localhost(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (IP SAN) and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lockgate test idp")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        # What strict verification (Python 3.13's default) expects of a trust anchor:
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
        )
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "idp.crt", directory / "idp.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def serve_tls_jwks(cert: Path, key: Path, document: bytes) -> asyncio.Server:
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(document), document)
            )
            await writer.drain()
        except (ssl.SSLError, ConnectionError, asyncio.IncompleteReadError):
            pass  # the client refused our certificate
        finally:
            writer.close()

    return await asyncio.start_server(answer, "127.0.0.1", 0, ssl=tls)


async def test_https_jwks_is_verified_against_the_trust_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: Clock, rsa_key: SigningKey
) -> None:
    cert, key = self_signed_localhost(tmp_path)
    server = await serve_tls_jwks(cert, key, orjson.dumps({"keys": [rsa_key.jwk()]}))
    port = server.sockets[0].getsockname()[1]
    spec = JwtIssuerSpec(
        issuer=ISSUER, audiences=[AUDIENCE], jwks_url=f"https://127.0.0.1:{port}/certs"
    )
    try:
        untrusting = JwtVerifier([spec], clock=clock)
        with pytest.raises(SigningKeysUnavailable):  # self-signed: not in the trust store
            await untrusting.verify(rsa_key.mint())

        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # now our certificate is trusted
        trusting = JwtVerifier([spec], clock=clock)
        assert (await trusting.verify(rsa_key.mint())).subject == "user-1"
    finally:
        server.close()
        await server.wait_closed()
