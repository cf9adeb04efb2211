"""OAuth through the running gateway: built-in issuer, an external IdP's JWTs, scopes to models, 401/403/429
shapes, and logs that never hold a token."""

from __future__ import annotations

import base64
import io
import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from gateway.auth.keystore import KeyFile, mint_token, signing_key
from gateway.cli import main as cli_main
from gateway.telemetry.logging import configure_logging
from tests.fakes.engine import FakeEngine
from tests.support.gateway import RunningGateway, gateway_settings, run_gateway
from tests.support.logcapture import Logs, RawCapture, saved_logging

AUDIENCE = "menshen"
DEFAULT_REPLY = "Hello from the fake engine."
MESSAGES: list[Any] = [{"role": "user", "content": "hi"}]


class IdP:
    """A local identity provider: OIDC discovery and a JWKS endpoint on a real socket, Keycloak paths."""

    def __init__(self, key: RSAKey) -> None:
        self.key = key
        self.requests: list[str] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.issuer = f"http://127.0.0.1:{self.server.server_address[1]}/realms/corp"
        self.jwks_url = self.issuer + "/protocol/openid-connect/certs"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True, name="idp")

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        idp = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                return None

            def do_GET(self) -> None:
                idp.requests.append(self.path)
                documents = {
                    "/realms/corp/.well-known/openid-configuration": {
                        "issuer": idp.issuer,
                        "jwks_uri": idp.jwks_url,
                    },
                    "/realms/corp/protocol/openid-connect/certs": {"keys": [idp.key.as_dict(private=False)]},
                }
                document = documents.get(self.path)
                data = json.dumps(document).encode()
                self.send_response(200 if document is not None else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler

    def token(self, **overrides: Any) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": AUDIENCE,
            "azp": "billing",
            "sub": "service-account-billing",
            "iat": now,
            "exp": now + 300,
            "scope": "llm.chat llm.models",
        }
        claims.update(overrides)
        return jwt.encode(
            {"alg": "RS256", "kid": self.key.kid, "typ": "JWT"}, claims, self.key, algorithms=["RS256"]
        )


@pytest.fixture(scope="module")
def idp_key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "corp-rsa-1", "use": "sig"})


@pytest.fixture
def idp(idp_key: RSAKey) -> Iterator[IdP]:
    server = IdP(idp_key)
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


@pytest.fixture
def engine() -> Iterator[FakeEngine]:
    with FakeEngine(models=("qwen3-8b", "smollm2-135m")) as fake:
        yield fake


def auth_overrides(tmp_path: Path, auth: str, **more: Any) -> dict[str, Any]:
    return {
        "auth": auth,
        "auth_key_file": tmp_path / "issuer-keys.json",
        "auth_secrets_file": tmp_path / "client-secrets.yaml",
        **more,
    }


@pytest.fixture
def builtin_gateway(engine: FakeEngine, tmp_path: Path) -> Iterator[RunningGateway]:
    with run_gateway(
        gateway_settings(tmp_path, engine.url, **auth_overrides(tmp_path, "builtin"))
    ) as running:
        yield running


@pytest.fixture
def mixed_gateway(engine: FakeEngine, idp: IdP, tmp_path: Path) -> Iterator[RunningGateway]:
    """``--auth jwt,builtin``: the IdP's keys by OIDC discovery, the built-in issuer's from its key file."""
    overrides = auth_overrides(tmp_path, "jwt,builtin", jwt_issuer=idp.issuer, jwt_audience=AUDIENCE)
    with run_gateway(gateway_settings(tmp_path, engine.url, **overrides)) as running:
        yield running


def add_client(tmp_path: Path, client_id: str, scopes: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """``gateway client add``; returns the secret it prints once."""
    scope_flags = [flag for scope in scopes for flag in ("--scope", scope)]
    assert cli_main(["client", "add", client_id, *scope_flags, "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    return next(
        line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("client_secret:")
    )


def fetch_token(gateway: RunningGateway, client_id: str, secret: str, **form: str) -> httpx.Response:
    return httpx.post(
        gateway.url + "/oauth/token",
        data={"grant_type": "client_credentials", **form},
        auth=(client_id, secret),
        timeout=30,
    )


def sdk(gateway: RunningGateway, token: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.api, api_key=token, max_retries=0, timeout=20)


def chat(gateway: RunningGateway, token: str | None, model: str = "qwen3-8b") -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.post(
        gateway.api + "/chat/completions",
        json={"model": model, "messages": MESSAGES},
        headers=headers,
        timeout=20,
    )


def kid_of(token: str) -> str:
    header = token.split(".")[0]
    return str(json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"])


def assert_openai_error(response: httpx.Response, status: int, type_: str, code: str) -> None:
    assert response.status_code == status
    error = response.json()["error"]
    assert (error["type"], error["code"]) == (type_, code)
    assert isinstance(error["message"], str)
    assert error["message"]


# --- built-in issuer end to end ---------------------------------------------------------------------------


def test_builtin_issuer_token_then_sdk_chat_then_rotation(
    builtin_gateway: RunningGateway, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = add_client(tmp_path, "svc-a", ["llm.chat"], capsys)
    response = fetch_token(builtin_gateway, "svc-a", secret)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["token_type"], body["scope"]) == ("Bearer", "llm.chat")
    old = body["access_token"]

    with sdk(builtin_gateway, old) as client:
        result = client.chat.completions.create(model="qwen3-8b", messages=MESSAGES)
        assert result.choices[0].message.content == DEFAULT_REPLY
        streamed = client.chat.completions.create(model="qwen3-8b", messages=MESSAGES, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == DEFAULT_REPLY

    key_file = tmp_path / "issuer-keys.json"
    assert cli_main(["keys", "rotate", "--data-dir", str(tmp_path)]) == 0
    new_kid = signing_key(KeyFile(key_file).load()).kid
    assert new_kid != kid_of(old)
    time.sleep(1.1)  # the gateway re-reads its local key file at most once a second on an unknown kid

    new = fetch_token(builtin_gateway, "svc-a", secret).json()["access_token"]
    assert kid_of(new) == new_kid
    published = httpx.get(builtin_gateway.url + "/oauth/jwks.json", timeout=10).json()["keys"]
    assert {k["kid"] for k in published} == {kid_of(old), new_kid}
    for token in (new, old):  # new key works; the old key's tokens keep working until they expire
        with sdk(builtin_gateway, token) as client:
            assert client.chat.completions.create(model="qwen3-8b", messages=MESSAGES).choices


def test_wrong_client_secret_is_invalid_client(
    builtin_gateway: RunningGateway, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    add_client(tmp_path, "svc-b", ["llm.chat"], capsys)
    response = fetch_token(builtin_gateway, "svc-b", "not-the-secret")
    assert response.status_code == 401
    assert response.json() == {
        "error": "invalid_client",
        "error_description": "Client authentication failed.",
    }
    assert response.headers["www-authenticate"].startswith("Basic ")
    assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    "grant", ["password", "authorization_code", "urn:ietf:params:oauth:grant-type:jwt-bearer"]
)
def test_unknown_grant_is_400(builtin_gateway: RunningGateway, grant: str) -> None:
    response = httpx.post(builtin_gateway.url + "/oauth/token", data={"grant_type": grant}, timeout=10)
    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_grant_type"


def test_token_endpoint_attempts_per_address_answer_429_slow_down(builtin_gateway: RunningGateway) -> None:
    # Cheap attempts (refused before any hash) count too: the limit is on attempts, not on failures.
    url = builtin_gateway.url + "/oauth/token"
    with httpx.Client(timeout=10) as http:
        statuses = [http.post(url, data={"grant_type": "password"}).status_code for _ in range(30)]
        assert statuses == [400] * 30
        refused = http.post(url, data={"grant_type": "client_credentials"}, auth=("svc", "secret"))
    assert refused.status_code == 429
    assert refused.json() == {
        "error": "slow_down",
        "error_description": "Too many token requests; retry later.",
    }
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["cache-control"] == "no-store"
    # Only the token endpoint is throttled: public metadata is still served.
    assert httpx.get(builtin_gateway.url + "/oauth/jwks.json", timeout=10).status_code == 200


# --- 401 through the gateway --------------------------------------------------------------------------------


def expired_token(gateway: RunningGateway, tmp_path: Path) -> str:
    key = signing_key(KeyFile(tmp_path / "issuer-keys.json").load())
    return mint_token(
        key,
        issuer=gateway.url,
        audience=AUDIENCE,
        client_id="svc-a",
        scopes=["llm.chat"],
        ttl_s=60,
        now=time.time() - 600,
    )


@pytest.mark.parametrize("kind", ["garbage", "three-segment garbage", "tampered", "expired", "two words"])
@pytest.mark.parametrize("path", ["/chat/completions", "/models"])
def test_bad_tokens_get_401_invalid_token_in_openai_shape(
    builtin_gateway: RunningGateway, tmp_path: Path, kind: str, path: str
) -> None:
    good = mint_token(
        signing_key(KeyFile(tmp_path / "issuer-keys.json").load()),
        issuer=builtin_gateway.url,
        audience=AUDIENCE,
        client_id="svc-a",
        scopes=["llm.chat"],
        ttl_s=600,
    )
    tampered = good[:-6] + ("AAAAAA" if not good.endswith("AAAAAA") else "BBBBBB")
    headers = {
        "garbage": "Bearer not-a-token",
        "three-segment garbage": "Bearer a.b.c",
        "tampered": f"Bearer {tampered}",
        "expired": f"Bearer {expired_token(builtin_gateway, tmp_path)}",
        "two words": "Bearer abc.def ghi",
    }
    body = {"model": "qwen3-8b", "messages": MESSAGES}
    response = httpx.request(
        "POST" if path.startswith("/chat") else "GET",
        builtin_gateway.api + path,
        json=body if path.startswith("/chat") else None,
        headers={"Authorization": headers[kind]},
        timeout=20,
    )
    assert_openai_error(response, 401, "authentication_error", "invalid_token")
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="menshen", error="invalid_token"')
    token = headers[kind].split(" ", 1)[1]
    for part in token.split("."):
        if len(part) > 3:
            assert part not in challenge
            assert part not in response.text


@pytest.mark.parametrize("header", [None, "Basic dXNlcjpwYXNz", "Token abc"])
def test_missing_token_gets_401_with_a_bare_bearer_challenge(
    builtin_gateway: RunningGateway, header: str | None
) -> None:
    headers = {"Authorization": header} if header is not None else {}
    response = httpx.post(
        builtin_gateway.api + "/chat/completions",
        json={"model": "qwen3-8b", "messages": MESSAGES},
        headers=headers,
        timeout=20,
    )
    assert_openai_error(response, 401, "authentication_error", "invalid_token")
    # RFC 6750 §3.1: a request without credentials gets the challenge without an error code.
    assert response.headers["www-authenticate"] == 'Bearer realm="menshen"'


def test_sdk_sees_authentication_error(builtin_gateway: RunningGateway) -> None:
    with sdk(builtin_gateway, "garbage") as client, pytest.raises(openai.AuthenticationError) as info:
        client.chat.completions.create(model="qwen3-8b", messages=MESSAGES)
    assert info.value.status_code == 401


# --- external IdP with jwt,builtin ---------------------------------------------------------------


def test_idp_scope_to_model_allowed_forbidden_and_model_list(
    engine: FakeEngine, idp: IdP, tmp_path: Path
) -> None:
    overrides = auth_overrides(
        tmp_path, "jwt,builtin", jwt_issuer=idp.issuer, jwt_audience=AUDIENCE, jwks_url=idp.jwks_url
    )
    with run_gateway(gateway_settings(tmp_path, engine.url, **overrides)) as gateway:
        token = idp.token()  # scopes llm.chat (models qwen3-*) and llm.models
        with sdk(gateway, token) as client:
            reply = client.chat.completions.create(model="qwen3-8b", messages=MESSAGES)
            assert reply.choices[0].message.content == DEFAULT_REPLY
            assert [m.id for m in client.models.list()] == ["qwen3-8b"]
        before = engine.requests_total
        forbidden = chat(gateway, token, model="smollm2-135m")
        assert_openai_error(forbidden, 403, "permission_error", "insufficient_scope")
        assert forbidden.headers["www-authenticate"].startswith(
            'Bearer realm="menshen", error="insufficient_scope"'
        )
        assert engine.requests_total == before, "a forbidden request must not reach the engine"
        # Without llm.models the model list is refused; without any granting scope, so is chat.
        only_chat = idp.token(scope="llm.chat")
        assert_openai_error(
            httpx.get(gateway.api + "/models", headers={"Authorization": f"Bearer {only_chat}"}, timeout=10),
            403,
            "permission_error",
            "insufficient_scope",
        )
    assert idp.requests == ["/realms/corp/protocol/openid-connect/certs"], "one JWKS fetch, no discovery"


def test_keycloak_account_audience_is_refused(mixed_gateway: RunningGateway, idp: IdP) -> None:
    for aud in ("account", ["account"], "menshen-other"):
        response = chat(mixed_gateway, idp.token(aud=aud))
        assert_openai_error(response, 401, "authentication_error", "invalid_token")
        assert 'error="invalid_token"' in response.headers["www-authenticate"]


def test_idp_and_builtin_tokens_are_both_accepted_at_once(
    mixed_gateway: RunningGateway, idp: IdP, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `gateway token` with the gateway's own flags mints with the key file and issuer URL it uses.
    port = str(mixed_gateway.settings.server.port)
    argv = ["token", "--client", "ops", "--scope", "llm.chat", "--port", port, "--data-dir", str(tmp_path)]
    assert cli_main(argv) == 0
    builtin = capsys.readouterr().out.strip()
    external = idp.token()
    for token in (builtin, external, builtin, external):
        response = chat(mixed_gateway, token)
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"]["content"] == DEFAULT_REPLY
    assert idp.requests[0] == "/realms/corp/.well-known/openid-configuration"
    # The IdP's tokens cannot pass for the built-in issuer's, nor the reverse: iss selects the keys.
    forged = jwt.encode(
        {"alg": "RS256", "kid": idp.key.kid},
        {"iss": mixed_gateway.url, "aud": AUDIENCE, "sub": "x", "exp": int(time.time()) + 60},
        idp.key,
        algorithms=["RS256"],
    )
    assert chat(mixed_gateway, forged).status_code == 401


# --- logs ---------------------------------------------------------------------------------------------------


@pytest.fixture
def captured_logs(mixed_gateway: RunningGateway) -> Iterator[Logs]:
    """The production logging set-up (``configure_logging``, as ``gateway serve``) at DEBUG into a buffer,
    plus a raw handler on the root logger; the previous set-up is restored afterwards.

    Installed after the app is built: Litestar's default ``logging_config`` re-configures the root logger
    when an app is created, which would drop handlers added before."""
    with saved_logging():
        rendered, raw = io.StringIO(), RawCapture()
        configure_logging("DEBUG", stream=rendered)
        logging.getLogger().addHandler(raw)
        yield Logs(raw, rendered)


def test_logs_never_contain_the_token(
    captured_logs: Logs,
    mixed_gateway: RunningGateway,
    idp: IdP,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    secret = add_client(tmp_path, "svc-log", ["llm.chat"], capsys)
    issued = fetch_token(mixed_gateway, "svc-log", secret).json()["access_token"]
    external = idp.token()
    wrong_aud = idp.token(aud="account")
    expired = expired_token(mixed_gateway, tmp_path)
    tampered = issued[:-6] + ("AAAAAA" if not issued.endswith("AAAAAA") else "BBBBBB")
    assert fetch_token(mixed_gateway, "svc-log", "wrong-" + secret).status_code == 401
    for token in (issued, external):
        assert chat(mixed_gateway, token).status_code == 200
        assert chat(mixed_gateway, token, model="smollm2-135m").status_code == 403
    for token in (wrong_aud, expired, tampered):
        assert chat(mixed_gateway, token).status_code == 401

    text = captured_logs.text()
    # The capture saw the gateway: its access lines name the clients (by id, never by token).
    assert '"client_id":"svc-log"' in captured_logs.rendered.getvalue()
    assert '"client_id":"billing"' in captured_logs.rendered.getvalue()
    assert "menshen.access" in "\n".join(captured_logs.raw.lines)
    for token in (issued, external, wrong_aud, expired, tampered):
        _header, payload, signature = token.split(".")
        assert token not in text
        assert payload not in text
        assert signature not in text
    assert secret not in text
