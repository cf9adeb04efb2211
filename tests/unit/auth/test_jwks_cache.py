"""Key cache behaviour: TTL, single-flight refetch, cooldown, rotation, outages, discovery."""

from __future__ import annotations

import asyncio
import secrets

import httpx
import pytest
from joserfc.jwk import ECKey, RSAKey

from gateway.auth.errors import AuthError
from gateway.auth.jwks import JwksCache, KeySourceUnavailable, RemoteJwksSource, parse_jwks
from tests.support.jwt import ISS, JWKS_URL, Clock, JwksServer, claims, make_verifier, raw_token, sign


async def test_keys_are_fetched_once_and_reused(
    http: httpx.AsyncClient, clock: Clock, jwks_server: JwksServer, rsa_key: RSAKey
) -> None:
    verifier, _ = make_verifier(http, clock)
    for _ in range(5):
        await verifier.verify(sign(rsa_key, "RS256", claims()))
    assert jwks_server.requests == 1


async def test_stale_keys_are_refreshed_after_the_ttl(
    http: httpx.AsyncClient, clock: Clock, jwks_server: JwksServer, rsa_key: RSAKey
) -> None:
    verifier, _ = make_verifier(http, clock, ttl_s=60, cooldown_s=5)
    await verifier.verify(sign(rsa_key, "RS256", claims()))
    clock.now += 59
    await verifier.verify(sign(rsa_key, "RS256", claims()))
    assert jwks_server.requests == 1
    clock.now += 2
    await verifier.verify(sign(rsa_key, "RS256", claims()))
    assert jwks_server.requests == 2


async def test_flood_of_random_kids_makes_at_most_one_refetch_per_cooldown(
    http: httpx.AsyncClient, clock: Clock, jwks_server: JwksServer, rsa_key: RSAKey
) -> None:
    verifier, cache = make_verifier(http, clock, cooldown_s=30)
    await verifier.verify(sign(rsa_key, "RS256", claims()))  # warm
    clock.now += 31

    async def attempt() -> str:
        # The signature is never looked at: an unknown kid is refused before any cryptography.
        token = raw_token({"alg": "RS256", "kid": secrets.token_hex(8)}, claims(), secrets.token_bytes(256))
        try:
            await verifier.verify(token)
        except AuthError as exc:
            return exc.reason
        return "accepted"

    reasons = await asyncio.gather(*(attempt() for _ in range(200)))
    assert set(reasons) == {"unknown_key"}
    assert jwks_server.requests == 2  # warm-up + one refetch for the whole flood
    clock.now += 10
    await asyncio.gather(*(attempt() for _ in range(50)))
    assert jwks_server.requests == 2  # still cooling down
    clock.now += 21
    await asyncio.gather(*(attempt() for _ in range(50)))
    assert jwks_server.requests == 3
    assert cache.fetches == 3


async def test_concurrent_cold_lookups_share_one_fetch(
    http: httpx.AsyncClient, clock: Clock, jwks_server: JwksServer, rsa_key: RSAKey
) -> None:
    verifier, _ = make_verifier(http, clock)
    token = sign(rsa_key, "RS256", claims())
    principals = await asyncio.gather(*(verifier.verify(token) for _ in range(20)))
    assert {p.client_id for p in principals} == {"billing"}
    assert jwks_server.requests == 1


async def test_key_rotation_new_kid_is_accepted_after_one_refetch(
    http: httpx.AsyncClient, clock: Clock, jwks_server: JwksServer, rsa_key: RSAKey
) -> None:
    verifier, _ = make_verifier(http, clock, cooldown_s=30)
    await verifier.verify(sign(rsa_key, "RS256", claims()))
    rotated = RSAKey.generate_key(2048, parameters={"kid": "rsa2", "use": "sig"})
    jwks_server.keys.append(rotated)
    clock.now += 31
    principal = await verifier.verify(sign(rotated, "RS256", claims()))
    assert principal.client_id == "billing"
    assert jwks_server.requests == 2
    await verifier.verify(sign(rotated, "RS256", claims()))
    await verifier.verify(sign(rsa_key, "RS256", claims()))
    assert jwks_server.requests == 2


async def test_jwks_down_with_warm_keys_still_verifies(
    http: httpx.AsyncClient, clock: Clock, jwks_server: JwksServer, ec_key: ECKey
) -> None:
    verifier, _ = make_verifier(http, clock, ttl_s=60, cooldown_s=30)
    await verifier.verify(sign(ec_key, "ES256", claims()))
    jwks_server.down = True
    clock.now += 3600  # long past the TTL
    for _ in range(3):
        assert (await verifier.verify(sign(ec_key, "ES256", claims()))).client_id == "billing"
    # One failed refresh attempt, then the cooldown stops hammering the dead endpoint.
    assert jwks_server.requests == 2


async def test_cold_start_with_jwks_down_fails_closed(
    http: httpx.AsyncClient, clock: Clock, jwks_server: JwksServer, rsa_key: RSAKey
) -> None:
    jwks_server.down = True
    verifier, _ = make_verifier(http, clock)
    with pytest.raises(AuthError) as info:
        await verifier.verify(sign(rsa_key, "RS256", claims()))
    assert info.value.reason == "jwks_unavailable"
    assert info.value.status == 503


async def test_fetch_timeout_is_applied(rsa_key: RSAKey) -> None:
    seen: list[float | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.extensions["timeout"]["read"])
        raise httpx.ReadTimeout("slow", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        source = RemoteJwksSource(client, issuer=ISS, jwks_url=JWKS_URL, timeout_s=0.25)
        with pytest.raises(KeySourceUnavailable, match="ReadTimeout"):
            await source.fetch()
    assert seen == [0.25]


async def test_discovery_finds_the_jwks_uri(rsa_key: RSAKey) -> None:
    served: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        served.append(request.url.path)
        if request.url.path.endswith("/.well-known/openid-configuration"):
            return httpx.Response(200, json={"issuer": ISS, "jwks_uri": JWKS_URL})
        return httpx.Response(200, json={"keys": [rsa_key.as_dict(private=False)]})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        keys = await RemoteJwksSource(client, issuer=ISS).fetch()
    assert list(keys) == ["rsa1"]
    assert served[0] == "/realms/corp/.well-known/openid-configuration"


async def test_discovery_naming_another_issuer_is_refused() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"issuer": "https://evil.example", "jwks_uri": JWKS_URL})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(KeySourceUnavailable, match="different issuer"):
            await RemoteJwksSource(client, issuer=ISS).fetch()


def test_parse_jwks_skips_symmetric_encryption_and_private_keys(rsa_key: RSAKey, ec_key: ECKey) -> None:
    document = {
        "keys": [
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
            {**rsa_key.as_dict(private=False), "kid": "enc", "use": "enc"},
            {**ec_key.as_dict(private=True), "kid": "leaked"},
            {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
            rsa_key.as_dict(private=False),
        ]
    }
    assert list(parse_jwks(document)) == ["rsa1"]


def test_parse_jwks_rejects_a_non_jwks_document() -> None:
    with pytest.raises(KeySourceUnavailable):
        parse_jwks({"keys": "nope"})


async def test_token_without_kid_uses_the_only_key(rsa_key: RSAKey) -> None:
    class OneKey:
        async def fetch(self) -> dict[str, object]:
            return {"only": rsa_key}

    cache = JwksCache(OneKey(), ttl_s=60, cooldown_s=1)  # type: ignore[arg-type]
    assert await cache.get(None) is rsa_key
