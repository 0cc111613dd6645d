"""A real identity provider for JWT tests: keys made with ``cryptography``, a JWKS over HTTP."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import jwt as pyjwt
import orjson
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from lockgate.http.server import Connection, HttpRequest, HttpServer

ISSUER = "https://idp.example.test/realm"
AUDIENCE = "lockgate"


@dataclass
class SigningKey:
    kid: str
    alg: str
    private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

    @classmethod
    def rsa(cls, kid: str, bits: int = 2048) -> SigningKey:
        return cls(kid, "RS256", rsa.generate_private_key(public_exponent=65537, key_size=bits))

    @classmethod
    def ec(cls, kid: str) -> SigningKey:
        return cls(kid, "ES256", ec.generate_private_key(ec.SECP256R1()))

    def jwk(self, **extra: Any) -> dict[str, Any]:
        public = self.private.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
        else:
            jwk = ECAlgorithm.to_jwk(public, as_dict=True)
        assert isinstance(jwk, dict)
        return {**jwk, "kid": self.kid, "use": "sig", "alg": self.alg, **extra}

    def mint(
        self,
        claims: dict[str, Any] | None = None,
        *,
        kid: str | None = None,
        has_kid: bool = True,
        **over: Any,
    ) -> str:
        """A token from this key; ``over`` replaces default claims (None removes one)."""
        now = int(time.time())
        payload: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "user-1",
            "iat": now,
            "exp": now + 600,
            "org_id": "org-1",
            "project_id": "proj-1",
            "roles": ["member"],
            **(claims or {}),
        }
        for name, value in over.items():
            if value is None:
                payload.pop(name, None)
            else:
                payload[name] = value
        headers = {"kid": kid or self.kid} if has_kid else None
        return pyjwt.encode(payload, self.private, algorithm=self.alg, headers=headers)


@dataclass
class FakeIdp:
    """Serves ``jwks`` at ``/jwks``; counts requests; can fail or hang on demand."""

    keys: list[SigningKey] = field(default_factory=list)
    requests: int = 0
    status: int = 200
    is_hanging: bool = False
    body: bytes | None = None  # overrides the JWKS document
    port: int = 0
    server: HttpServer | None = None
    request_seen: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/jwks"

    def document(self) -> bytes:
        if self.body is not None:
            return self.body
        return orjson.dumps({"keys": [k.jwk() for k in self.keys]})

    async def handle(self, request: HttpRequest, conn: Connection) -> None:
        self.requests += 1
        self.request_seen.set()
        if self.is_hanging:
            await asyncio.Event().wait()  # cancelled when the client gives up
        if request.path != "/jwks":
            conn.respond(404, b"", b"")
            return
        conn.respond(self.status, b"content-type: application/json\r\n", self.document())

    async def start(self) -> None:
        self.server = HttpServer(self.handle)
        self.port = await self.server.listen("127.0.0.1", 0)

    async def stop(self) -> None:
        assert self.server is not None
        await self.server.drain(0.5)


class Clock:
    """Monotonic seconds under the test's control."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
