"""The built-in issuer end to end over Litestar: token endpoint, metadata, JWKS, verification."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import Litestar, Request, get
from litestar.testing import AsyncTestClient

from gateway.auth.authenticator import Authenticator
from gateway.auth.authorize import authorize
from gateway.auth.clientstore import ClientStore
from gateway.auth.config import AuthConfig
from gateway.auth.errors import AuthError, Forbidden
from gateway.auth.issuer import BuiltinIssuer
from gateway.auth.keystore import KeyFile
from gateway.policy.sections import ClientPolicy, ClientsSection, ScopeGrant
from gateway.routes.oauth import oauth_router

ISSUER = "http://127.0.0.1:8080"
POLICY = ClientsSection(
    clients={"reporting": ClientPolicy(tier="gold", models=["qwen3-8b"], scopes=["reports"])},
    scopes={"chat.small": ScopeGrant(tier="bronze", models=["smollm2-*"], endpoints=["chat"])},
)


class Issued:
    """Config, client secrets and issuer: argon2 hashing is slow, so built once per module."""

    def __init__(self, directory: Path) -> None:
        self.config = AuthConfig(
            builtin_issuer=ISSUER, key_file=directory / "keys.json", secrets_file=directory / "secrets.yaml"
        )
        store = ClientStore(self.config.secrets_file)
        self.demo_secret = store.add("demo", ["chat.small"])
        self.reporting_secret = store.add("reporting", [])
        self.issuer = BuiltinIssuer(self.config, clients_policy=lambda: POLICY)


class Env:
    def __init__(self, issued: Issued, http: httpx.AsyncClient) -> None:
        self.config = issued.config
        self.demo_secret = issued.demo_secret
        self.reporting_secret = issued.reporting_secret
        self.auth = Authenticator.from_config(self.config, http)

        @get("/whoami")
        async def whoami(request: Request[Any, Any, Any]) -> dict[str, Any]:
            principal = await self.auth.authenticate(request.headers.get("authorization"))
            return {"client_id": principal.client_id, "scopes": sorted(principal.scopes)}

        self.app = Litestar([oauth_router(issued.issuer), whoami])


@pytest.fixture(scope="module")
def issued(tmp_path_factory: pytest.TempPathFactory) -> Issued:
    return Issued(tmp_path_factory.mktemp("issuer"))


@pytest.fixture
async def env(issued: Issued) -> AsyncIterator[Env]:
    async with httpx.AsyncClient() as http:
        yield Env(issued, http)


@pytest.fixture
async def client(env: Env) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(env.app) as test_client:
        yield test_client


async def fetch_token(
    client: AsyncTestClient[Litestar], cid: str, secret: str, **form: str
) -> httpx.Response:
    return await client.post(
        "/oauth/token", data={"grant_type": "client_credentials", **form}, auth=(cid, secret)
    )


async def test_client_credentials_basic_token_verifies_through_the_gateway_path(
    env: Env, client: AsyncTestClient[Litestar]
) -> None:
    response = await fetch_token(client, "demo", env.demo_secret)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["scope"] == "chat.small"
    principal = await env.auth.authenticate(f"Bearer {body['access_token']}")
    assert (principal.client_id, principal.scopes, principal.issuer) == (
        "demo",
        frozenset({"chat.small"}),
        ISSUER,
    )
    me = await client.get("/whoami", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.json() == {"client_id": "demo", "scopes": ["chat.small"]}


async def test_client_secret_post_works_too(env: Env, client: AsyncTestClient[Litestar]) -> None:
    response = await client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "client_id": "demo", "client_secret": env.demo_secret},
    )
    assert response.status_code == 200


@pytest.mark.parametrize(("cid", "secret"), [("demo", "wrong-secret"), ("nobody", "whatever")])
async def test_wrong_secret_or_unknown_client_is_invalid_client_401(
    env: Env, client: AsyncTestClient[Litestar], cid: str, secret: str
) -> None:
    response = await fetch_token(client, cid, secret)
    assert response.status_code == 401
    assert response.json() == {
        "error": "invalid_client",
        "error_description": "Client authentication failed.",
    }
    assert response.headers["www-authenticate"].startswith("Basic ")


async def test_scope_beyond_the_client_grant_is_invalid_scope(
    env: Env, client: AsyncTestClient[Litestar]
) -> None:
    response = await fetch_token(client, "demo", env.demo_secret, scope="chat.small reports")
    assert (response.status_code, response.json()["error"]) == (400, "invalid_scope")


async def test_policy_scopes_are_grantable(env: Env, client: AsyncTestClient[Litestar]) -> None:
    response = await fetch_token(client, "reporting", env.reporting_secret, scope="reports")
    assert response.status_code == 200
    assert response.json()["scope"] == "reports"


async def test_unsupported_grant_type(client: AsyncTestClient[Litestar], env: Env) -> None:
    response = await client.post(
        "/oauth/token", data={"grant_type": "password"}, auth=("demo", env.demo_secret)
    )
    assert (response.status_code, response.json()["error"]) == (400, "unsupported_grant_type")


async def test_two_authentication_methods_at_once_are_refused(
    env: Env, client: AsyncTestClient[Litestar]
) -> None:
    response = await fetch_token(client, "demo", env.demo_secret, client_secret=env.demo_secret)
    assert (response.status_code, response.json()["error"]) == (400, "invalid_request")


async def test_json_body_is_refused(client: AsyncTestClient[Litestar]) -> None:
    response = await client.post("/oauth/token", json={"grant_type": "client_credentials"})
    assert (response.status_code, response.json()["error"]) == (400, "invalid_request")


async def test_metadata_and_jwks(env: Env, client: AsyncTestClient[Litestar]) -> None:
    metadata = (await client.get("/.well-known/openid-configuration")).json()
    assert metadata["issuer"] == ISSUER
    assert metadata["token_endpoint"] == f"{ISSUER}/oauth/token"
    assert metadata["jwks_uri"] == f"{ISSUER}/oauth/jwks.json"
    keys = (await client.get("/oauth/jwks.json")).json()["keys"]
    assert len(keys) == 1
    assert keys[0]["kty"] == "EC"
    assert "d" not in keys[0]


async def test_scope_to_model_allowed_and_forbidden(env: Env, client: AsyncTestClient[Litestar]) -> None:
    token = (await fetch_token(client, "demo", env.demo_secret)).json()["access_token"]
    principal = await env.auth.authenticate(f"Bearer {token}")
    assert authorize(principal, POLICY, "smollm2-135m", "chat").tier == "bronze"
    with pytest.raises(Forbidden):
        authorize(principal, POLICY, "qwen3-8b", "chat")


async def test_rotation_new_tokens_use_the_new_key_and_old_tokens_still_verify(tmp_path: Path) -> None:
    async with httpx.AsyncClient() as http:
        env = Env(Issued(tmp_path), http)
        async with AsyncTestClient(env.app) as client:
            await _rotation(env, client)


async def _rotation(env: Env, client: AsyncTestClient[Litestar]) -> None:
    old = (await fetch_token(client, "demo", env.demo_secret)).json()["access_token"]
    await env.auth.authenticate(f"Bearer {old}")
    new_key = KeyFile(env.config.key_file).rotate(env.config.max_token_ttl_s)
    await asyncio.sleep(1.1)  # refetch cooldown of the local key source
    new = (await fetch_token(client, "demo", env.demo_secret)).json()["access_token"]
    assert new_key.kid in {k["kid"] for k in (await client.get("/oauth/jwks.json")).json()["keys"]}
    assert (await env.auth.authenticate(f"Bearer {new}")).client_id == "demo"
    assert (await env.auth.authenticate(f"Bearer {old}")).client_id == "demo"


async def test_invalid_token_gets_401_with_bearer_challenge_and_no_token_echo(
    env: Env, client: AsyncTestClient[Litestar]
) -> None:
    token = (await fetch_token(client, "demo", env.demo_secret)).json()["access_token"]
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    with pytest.raises(AuthError) as info:
        await env.auth.authenticate(f"Bearer {tampered}")
    assert info.value.status == 401
    challenge = info.value.www_authenticate
    assert challenge.startswith('Bearer realm="menshen", error="invalid_token"')
    assert all(part not in challenge for part in tampered.split("."))


async def test_no_log_record_contains_a_token_or_secret(
    env: Env, client: AsyncTestClient[Litestar], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    response = await fetch_token(client, "demo", env.demo_secret)
    token = response.json()["access_token"]
    await client.get("/whoami", headers={"Authorization": f"Bearer {token}"})
    await fetch_token(client, "demo", "wrong-secret")
    for bad in (token, token[:-5] + "xxxxx", "not.a.jwt-at-all"):
        with pytest.raises(AuthError):
            await env.auth.authenticate(f"Bearer {bad}" if bad != token else "Bearer x" + bad)
    assert caplog.records, "expected some log records"
    for record in caplog.records:
        text = record.getMessage() + repr(record.args)
        for secret in (token, env.demo_secret, "wrong-secret", *token.split(".")):
            assert secret not in text
