"""Shared helpers of the auth tests: keys, token crafting, an in-process JWKS server."""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from joserfc import jwt
from joserfc.jwk import Key

from gateway.auth.jwks import JwksCache, RemoteJwksSource
from gateway.auth.jwt import IssuerTrust, JwtVerifier

ISS = "https://idp.example/realms/corp"
AUD = "menshen"
JWKS_URL = "https://idp.example/realms/corp/protocol/openid-connect/certs"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: object) -> str:
    return b64(json.dumps(value).encode())


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISS,
        "aud": AUD,
        "sub": "svc-user",
        "azp": "billing",
        "exp": now + 300,
        "iat": now,
        "scope": "chat models",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(key: Key, alg: str, body: dict[str, Any], **header: Any) -> str:
    return jwt.encode({"alg": alg, "kid": key.kid, **header}, body, key, algorithms=[alg])


def raw_token(header: object, payload: object, signature: bytes = b"sig") -> str:
    return f"{b64json(header)}.{b64json(payload)}.{b64(signature)}"


class Clock:
    """A monotonic clock the tests move by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class JwksServer:
    """An in-process JWKS endpoint (httpx MockTransport) that counts requests and can go down."""

    keys: list[Key]
    requests: int = 0
    down: bool = False
    urls: list[str] = field(default_factory=list)

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        self.urls.append(str(request.url))
        if self.down:
            raise httpx.ConnectError("down", request=request)
        if str(request.url) != JWKS_URL:
            return httpx.Response(404)
        return httpx.Response(200, json={"keys": [k.as_dict(private=False) for k in self.keys]})

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handler))


def make_verifier(
    client: httpx.AsyncClient,
    clock: Clock,
    *,
    algorithms: frozenset[str] = frozenset({"RS256", "PS256", "ES256"}),
    ttl_s: float = 600.0,
    cooldown_s: float = 30.0,
    leeway_s: float = 30.0,
) -> tuple[JwtVerifier, JwksCache]:
    source = RemoteJwksSource(client, issuer=ISS, jwks_url=JWKS_URL, timeout_s=1.0)
    cache = JwksCache(source, ttl_s=ttl_s, cooldown_s=cooldown_s, clock=clock)
    verifier = JwtVerifier(
        [IssuerTrust(ISS, AUD, algorithms, cache)], leeway_s=leeway_s, max_token_bytes=8192
    )
    return verifier, cache
