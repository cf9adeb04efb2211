"""Hostile and malformed JWTs: each is refused with a 401 AuthError, never another exception."""

from __future__ import annotations

import hashlib
import hmac
import time
import warnings

import httpx
import pytest
import time_machine
from joserfc.errors import SecurityWarning
from joserfc.jwk import ECKey, OKPKey, RSAKey

from gateway.auth.errors import AuthError
from gateway.auth.jwt import IssuerTrust, JwtVerifier
from tests.support.jwt import (
    AUD,
    ISS,
    Clock,
    JwksServer,
    b64,
    b64json,
    claims,
    make_verifier,
    raw_token,
    sign,
)


async def rejected(verifier: JwtVerifier, token: str, reason: str) -> AuthError:
    with pytest.raises(AuthError) as info:
        await verifier.verify(token)
    assert info.value.status == 401
    assert info.value.reason == reason
    # The description is a fixed sentence: no part of the token leaks into it.
    for segment in token.split("."):
        if len(segment) >= 8:
            assert segment not in info.value.description
    return info.value


@pytest.fixture
def verifier(http: httpx.AsyncClient, clock: Clock) -> JwtVerifier:
    return make_verifier(http, clock)[0]


async def test_valid_rs256_es256_ps256_tokens_verify(
    verifier: JwtVerifier, rsa_key: RSAKey, ec_key: ECKey
) -> None:
    for key, alg in ((rsa_key, "RS256"), (rsa_key, "PS256"), (ec_key, "ES256")):
        principal = await verifier.verify(sign(key, alg, claims()))
        assert principal.client_id == "billing"
        assert principal.scopes == {"chat", "models"}
        assert principal.issuer == ISS


@pytest.mark.parametrize("alg", ["Ed25519", "EdDSA"])
async def test_ed25519_verifies_only_where_configured(
    http: httpx.AsyncClient, clock: Clock, okp_key: OKPKey, ec_key: ECKey, alg: str
) -> None:
    # RFC 9864 names the algorithm Ed25519 and deprecates the polymorphic EdDSA; both are accepted if listed.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)  # joserfc warns when *signing* with EdDSA
        token = sign(okp_key, alg, claims())
    default, _ = make_verifier(http, clock)
    await rejected(default, token, "alg_not_allowed")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with_ed, _ = make_verifier(http, clock, algorithms=frozenset({"ES256", alg}))
    # Configuring the deprecated name warns once, at start-up, not per request.
    assert [w.category for w in caught] == ([SecurityWarning] if alg == "EdDSA" else [])
    assert (await with_ed.verify(token)).client_id == "billing"
    assert (await with_ed.verify(sign(ec_key, "ES256", claims()))).client_id == "billing"
    # The Ed25519 header on a token the EC key signed, under the EC key's kid: refused.
    forged = sign(ec_key, "ES256", claims()).split(".")
    forged[0] = b64json({"alg": alg, "kid": "ec1", "typ": "JWT"})
    await rejected(with_ed, ".".join(forged), "bad_signature")


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
async def test_alg_none_in_any_case_is_refused(verifier: JwtVerifier, alg: str) -> None:
    await rejected(verifier, raw_token({"alg": alg, "kid": "rsa1"}, claims(), b"") + "x", "alg_not_allowed")


async def test_unsigned_token_with_empty_signature_is_malformed(verifier: JwtVerifier) -> None:
    await rejected(verifier, f"{b64json({'alg': 'none'})}.{b64json(claims())}.", "malformed")


async def test_hs256_signed_with_the_rsa_public_key_is_refused(
    verifier: JwtVerifier, rsa_key: RSAKey
) -> None:
    header, payload = b64json({"alg": "HS256", "kid": "rsa1", "typ": "JWT"}), b64json(claims())
    secret = rsa_key.as_pem(private=False)
    signature = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    await rejected(verifier, f"{header}.{payload}.{b64(signature)}", "alg_not_allowed")


def test_an_issuer_cannot_be_configured_with_hmac(http: httpx.AsyncClient, clock: Clock) -> None:
    _, cache = make_verifier(http, clock)
    with pytest.raises(ValueError, match="asymmetric"):
        IssuerTrust(ISS, AUD, frozenset({"RS256", "HS256"}), cache)


async def test_es256_header_with_rsa_kid_is_refused(verifier: JwtVerifier, ec_key: ECKey) -> None:
    # An EC signature presented under the RSA key's kid: key type and alg do not match.
    body = claims()
    token = sign(ec_key, "ES256", body)
    header = b64json({"alg": "ES256", "kid": "rsa1", "typ": "JWT"})
    await rejected(verifier, header + token[token.index(".") :], "bad_signature")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("jku", "https://attacker.example/jwks.json"),
        ("x5u", "https://attacker.example/cert.pem"),
        ("jwk", None),
        ("x5c", ["MIIB"]),
    ],
)
async def test_attacker_key_headers_are_refused_without_any_fetch(
    verifier: JwtVerifier, jwks_server: JwksServer, attacker_key: RSAKey, name: str, value: object
) -> None:
    # Header value for jwk: the attacker's own public key, which signed the token.
    header_value = attacker_key.as_dict(private=False) if value is None else value
    token = sign(attacker_key, "RS256", claims(), **{name: header_value, "kid": "attacker"})
    await rejected(verifier, token, "forbidden_header")
    assert jwks_server.requests == 0


async def test_unknown_crit_is_refused(verifier: JwtVerifier, rsa_key: RSAKey) -> None:
    token = raw_token({"alg": "RS256", "kid": "rsa1", "crit": ["urn:x-ext"], "urn:x-ext": 1}, claims())
    await rejected(verifier, token, "unsupported_crit")


async def test_expired_token_is_refused(verifier: JwtVerifier, rsa_key: RSAKey) -> None:
    await rejected(verifier, sign(rsa_key, "RS256", claims(exp=int(time.time()) - 3600)), "expired")


async def test_nbf_in_the_future_is_refused(verifier: JwtVerifier, rsa_key: RSAKey) -> None:
    await rejected(verifier, sign(rsa_key, "RS256", claims(nbf=int(time.time()) + 3600)), "not_yet_valid")


async def test_iat_in_the_future_is_refused(verifier: JwtVerifier, rsa_key: RSAKey) -> None:
    await rejected(verifier, sign(rsa_key, "RS256", claims(iat=int(time.time()) + 3600)), "not_yet_valid")


DUP_HEADER = b64(b'{"alg":"RS256","alg":"none"}')
NOW = 1_900_000_000
LEEWAY = 30


@pytest.mark.parametrize(
    ("claim", "delta", "ok"),
    [
        ("exp", -LEEWAY + 1, True),  # expired 29 s ago: inside the leeway
        ("exp", -LEEWAY - 1, False),  # expired 31 s ago
        ("nbf", LEEWAY - 1, True),  # valid in 29 s
        ("nbf", LEEWAY + 1, False),  # valid in 31 s
        ("iat", LEEWAY - 1, True),  # issued 29 s in the future (clock skew)
        ("iat", LEEWAY + 1, False),
    ],
)
async def test_each_time_limit_plus_minus_one_second_at_the_leeway(
    http: httpx.AsyncClient, clock: Clock, rsa_key: RSAKey, claim: str, delta: int, ok: bool
) -> None:
    verifier, _ = make_verifier(http, clock, leeway_s=LEEWAY)
    body = claims(iat=NOW - 10, exp=NOW + 300)
    body[claim] = NOW + delta
    token = sign(rsa_key, "RS256", body)
    with time_machine.travel(NOW, tick=False):
        if ok:
            assert (await verifier.verify(token)).client_id == "billing"
        else:
            await rejected(verifier, token, "expired" if claim == "exp" else "not_yet_valid")


async def test_missing_exp_is_refused(verifier: JwtVerifier, rsa_key: RSAKey) -> None:
    body = claims()
    del body["exp"]
    await rejected(verifier, sign(rsa_key, "RS256", body), "malformed")


@pytest.mark.parametrize("exp", ["9999999999", True, None])
async def test_exp_of_a_wrong_type_is_refused(verifier: JwtVerifier, rsa_key: RSAKey, exp: object) -> None:
    body = claims()
    body["exp"] = exp if exp is not None else [9999999999]
    await rejected(verifier, sign(rsa_key, "RS256", body), "malformed")


async def test_wrong_issuer_is_refused_without_fetching(
    verifier: JwtVerifier, jwks_server: JwksServer, rsa_key: RSAKey
) -> None:
    await rejected(verifier, sign(rsa_key, "RS256", claims(iss="https://other.example")), "bad_issuer")
    assert jwks_server.requests == 0


async def test_missing_issuer_is_refused(verifier: JwtVerifier, rsa_key: RSAKey) -> None:
    body = claims()
    del body["iss"]
    await rejected(verifier, sign(rsa_key, "RS256", body), "bad_issuer")


@pytest.mark.parametrize("aud", ["account", "other-service", ["account", "broker"]])
async def test_wrong_audience_is_refused_including_keycloak_account(
    verifier: JwtVerifier, rsa_key: RSAKey, aud: object
) -> None:
    await rejected(verifier, sign(rsa_key, "RS256", claims(aud=aud)), "bad_audience")


async def test_missing_audience_is_refused(verifier: JwtVerifier, rsa_key: RSAKey) -> None:
    body = claims()
    del body["aud"]
    await rejected(verifier, sign(rsa_key, "RS256", body), "bad_audience")


async def test_audience_list_containing_ours_is_accepted(verifier: JwtVerifier, rsa_key: RSAKey) -> None:
    principal = await verifier.verify(sign(rsa_key, "RS256", claims(aud=["account", AUD])))
    assert principal.client_id == "billing"


async def test_100_kb_token_is_refused_before_parsing(verifier: JwtVerifier, jwks_server: JwksServer) -> None:
    token = raw_token({"alg": "RS256", "kid": "rsa1"}, {"pad": "a" * 100_000})
    assert len(token) > 100_000
    await rejected(verifier, token, "too_large")
    assert jwks_server.requests == 0


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("abc.def", id="two-segments"),
        pytest.param("a.b.c.d", id="four-segments"),
        pytest.param("a.b.c.d.e", id="jwe-five-segments"),
        pytest.param(f"{b64json({'alg': 'RS256'})}.!!!$.c2ln", id="bad-base64-payload"),
        pytest.param(f"eyJhbGciOiJSUzI1NiJ9=.{b64json(claims())}.c2ln", id="base64-padding"),
        pytest.param(f"{b64(b'{not json')}.{b64json(claims())}.c2ln", id="bad-json-header"),
        pytest.param(f"{b64json({'alg': 'RS256'})}.{b64(b'[1,2]')}.c2ln", id="payload-not-object"),
        pytest.param(f"{DUP_HEADER}.{b64json(claims())}.c2ln", id="dup-key"),
        pytest.param(f"{b64json({'alg': 'RS256', 'kid': 7})}.{b64json(claims())}.c2ln", id="int-kid"),
        pytest.param(f"{b64json({'alg': 'RS256', 'kid': ['rsa1']})}.{b64json(claims())}.c2ln", id="list-kid"),
        pytest.param(f"{b64json({'kid': 'rsa1'})}.{b64json(claims())}.c2ln", id="no-alg"),
        pytest.param(f"{b64json({'alg': 5})}.{b64json(claims())}.c2ln", id="int-alg"),
        pytest.param("é.é.é", id="non-ascii"),
    ],
)
async def test_malformed_tokens_are_refused(
    verifier: JwtVerifier, jwks_server: JwksServer, token: str
) -> None:
    await rejected(verifier, token, "malformed")
    assert jwks_server.requests == 0


async def test_non_string_kid_in_a_validly_signed_token_is_refused(
    verifier: JwtVerifier, rsa_key: RSAKey
) -> None:
    token = raw_token({"alg": "RS256", "kid": 123}, claims())
    await rejected(verifier, token, "malformed")


async def test_signature_from_an_unknown_key_is_refused(verifier: JwtVerifier) -> None:
    stranger = RSAKey.generate_key(2048, parameters={"kid": "stranger"})
    await rejected(verifier, sign(stranger, "RS256", claims()), "unknown_key")


async def test_signature_from_another_key_under_a_known_kid_is_refused(
    verifier: JwtVerifier, attacker_key: RSAKey
) -> None:
    assert attacker_key.kid == "rsa1"
    await rejected(verifier, sign(attacker_key, "RS256", claims()), "bad_signature")


async def test_tampered_payload_is_refused(verifier: JwtVerifier, rsa_key: RSAKey) -> None:
    header, _, signature = sign(rsa_key, "RS256", claims()).split(".")
    forged = b64json(claims(scope="admin chat models"))
    await rejected(verifier, f"{header}.{forged}.{signature}", "bad_signature")


async def test_algorithm_outside_the_allow_list_is_refused(
    http: httpx.AsyncClient, clock: Clock, rsa_key: RSAKey
) -> None:
    verifier, _ = make_verifier(http, clock, algorithms=frozenset({"ES256"}))
    await rejected(verifier, sign(rsa_key, "RS256", claims()), "alg_not_allowed")


async def test_id_token_type_is_refused(verifier: JwtVerifier, rsa_key: RSAKey) -> None:
    await rejected(verifier, sign(rsa_key, "RS256", claims(), typ="logout+jwt"), "malformed")
