"""Authenticator wiring, header parsing, principal mapping, challenge headers and config checks."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from joserfc.jwk import RSAKey

from gateway.auth.authenticator import Authenticator, bearer_token, check_auth_none_allowed
from gateway.auth.config import AuthConfig
from gateway.auth.errors import AuthError, Forbidden, bearer_challenge
from gateway.auth.jwks import JwksCache
from gateway.auth.jwt import IssuerTrust, JwtVerifier
from gateway.auth.principal import principal_from_claims
from tests.support.jwt import AUD, ISS, Clock, claims, make_verifier, sign


@pytest.mark.parametrize("header", [None, "", "Basic dXNlcjpwYXNz", "Bearer", "Bearer   "])
def test_missing_or_non_bearer_header(header: str | None) -> None:
    with pytest.raises(AuthError) as info:
        bearer_token(header)
    assert info.value.reason in {"missing", "malformed"}
    assert info.value.status == 401


def test_missing_token_challenge_has_no_error_code() -> None:
    with pytest.raises(AuthError) as info:
        bearer_token(None)
    assert info.value.www_authenticate == 'Bearer realm="menshen"'


def test_bearer_scheme_is_case_insensitive() -> None:
    assert bearer_token("bearer abc.def.ghi") == "abc.def.ghi"


def test_token_with_inner_space_is_malformed() -> None:
    with pytest.raises(AuthError, match="malformed"):
        bearer_token("Bearer abc def")


def test_challenge_header_shape_and_escaping() -> None:
    assert bearer_challenge("invalid_token", 'bad "x"\\\n') == (
        'Bearer realm="menshen", error="invalid_token", error_description="bad x"'
    )
    assert 'error="insufficient_scope"' in Forbidden("no").www_authenticate


def test_client_id_precedence_azp_then_client_id_then_sub() -> None:
    assert principal_from_claims({"azp": "a", "client_id": "c", "sub": "s"}, ISS, "t").client_id == "a"
    assert principal_from_claims({"client_id": "c", "sub": "s"}, ISS, "t").client_id == "c"
    assert principal_from_claims({"sub": "s"}, ISS, "t").client_id == "s"
    with pytest.raises(AuthError):
        principal_from_claims({"azp": 5, "sub": "s"}, ISS, "t")


def test_scopes_from_scope_or_scp() -> None:
    assert principal_from_claims({"sub": "s", "scope": "a  b"}, ISS, "t").scopes == {"a", "b"}
    assert principal_from_claims({"sub": "s", "scp": ["a", "b"]}, ISS, "t").scopes == {"a", "b"}
    assert principal_from_claims({"sub": "s", "scp": "a b"}, ISS, "t").scopes == {"a", "b"}
    with pytest.raises(AuthError):
        principal_from_claims({"sub": "s", "scp": [1]}, ISS, "t")


def test_token_id_hash_is_not_the_token() -> None:
    p = principal_from_claims({"sub": "s"}, ISS, "secret-token-value")
    assert len(p.token_id_hash) == 16
    assert "secret" not in p.token_id_hash
    assert p.token_id_hash == principal_from_claims({"sub": "x"}, ISS, "secret-token-value").token_id_hash


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("127.3.4.5", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("gateway.corp", False),
    ],
)
def test_auth_none_only_on_loopback(host: str, allowed: bool) -> None:
    error = check_auth_none_allowed(host)
    assert (error is None) is allowed
    if not allowed:
        assert host in str(error)


async def test_auth_none_yields_anonymous_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    async with httpx.AsyncClient() as http:
        auth = Authenticator.from_config(AuthConfig(modes=frozenset({"none"})), http)
    principal = await auth.authenticate(None)
    assert principal.client_id == "anonymous"
    assert principal.is_anonymous
    assert any("AUTH IS DISABLED" in r.getMessage() for r in caplog.records)


def test_config_reports_every_problem_at_once(tmp_path: Path) -> None:
    config = AuthConfig(
        modes=frozenset({"jwt", "introspection", "builtin"}),
        algorithms=("RS256", "HS256"),
        builtin_issuer="http://gateway.corp:8080",
        introspection_client_secret_file=tmp_path / "missing",
    )
    problems = config.problems()
    joined = "\n".join(problems)
    for expected in (
        "--jwt-issuer",
        "--jwt-audience",
        "HS256",
        "--introspection-url",
        "--introspection-client-id",
        "is not a readable file",
        "https",
    ):
        assert expected in joined
    assert AuthConfig(modes=frozenset({"none", "jwt"}), jwt_issuer=ISS, jwt_audience=AUD).problems() == [
        "--auth: 'none' cannot be combined with other modes"
    ]


def test_builtin_config_needs_its_issuer_and_files(tmp_path: Path) -> None:
    problems = AuthConfig().problems()
    assert problems == [
        "--auth-issuer is required with --auth builtin",
        "--auth-key-file is required with --auth builtin",
        "--auth-secrets-file is required with --auth builtin",
    ]
    complete = AuthConfig(
        builtin_issuer="http://127.0.0.1:8080", key_file=tmp_path / "k.json", secrets_file=tmp_path / "s.yaml"
    )
    assert complete.problems() == []


async def test_oversized_header_is_refused_before_verification(
    rsa_key: RSAKey, http: httpx.AsyncClient
) -> None:
    verifier, _ = make_verifier(http, Clock())
    auth = Authenticator(jwt=verifier, max_token_bytes=8192)
    with pytest.raises(AuthError, match="too_large"):
        await auth.authenticate("Bearer " + "a" * 100_000)
    assert (await auth.authenticate("Bearer " + sign(rsa_key, "RS256", claims()))).client_id == "billing"


class _Static:
    def __init__(self, key: RSAKey) -> None:
        self.key = key

    async def fetch(self) -> dict[str, RSAKey]:
        return {"rsa1": self.key}


_TOKEN_CHARS = st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.=+/ é\x00")


@settings(max_examples=300, deadline=None)
@given(token=st.text(_TOKEN_CHARS, max_size=400))
def test_arbitrary_tokens_only_ever_raise_auth_error(token: str, rsa_key: RSAKey) -> None:
    cache = JwksCache(_Static(rsa_key), ttl_s=60, cooldown_s=1)  # type: ignore[arg-type]
    auth = Authenticator(jwt=JwtVerifier([IssuerTrust(ISS, AUD, frozenset({"RS256"}), cache)]))
    with pytest.raises(AuthError) as info:
        asyncio.run(auth.authenticate("Bearer " + token))
    assert info.value.status == 401
