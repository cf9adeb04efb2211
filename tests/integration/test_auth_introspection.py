"""RFC 7662 introspection against a real local HTTP server: active, inactive, down, caching."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest

from gateway.auth.authenticator import Authenticator
from gateway.auth.config import AuthConfig
from gateway.auth.errors import AuthError

CLIENT_ID, CLIENT_SECRET = "menshen-gw", "s3cr:et/+"
ACTIVE = {
    "good-token": {
        "active": True,
        "azp": "billing",
        "sub": "u1",
        "scope": "chat",
        "iss": "https://kc/realms/corp",
        "aud": ["menshen", "account"],
    },
    "other-aud": {"active": True, "azp": "billing", "aud": "account"},
}


class Introspection:
    def __init__(self) -> None:
        self.calls = 0
        self.bad_auth = 0
        handler = self._handler()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/introspect"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                return None

            def do_POST(self) -> None:
                outer.calls += 1
                expected = "Basic " + base64.b64encode(b"menshen-gw:s3cr%3Aet%2F%2B").decode()
                if self.headers.get("Authorization") != expected:
                    outer.bad_auth += 1
                    self.send_response(401)
                    self.end_headers()
                    return
                form = parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
                token = form["token"][0]
                body = dict(ACTIVE.get(token, {"active": False}))
                if body.get("active"):
                    body["exp"] = int(time.time()) + 600
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler


@pytest.fixture
def idp() -> Iterator[Introspection]:
    server = Introspection()
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


def config(tmp_path: Path, url: str, **extra: object) -> AuthConfig:
    secret_file = tmp_path / "introspection-secret"
    secret_file.write_text(CLIENT_SECRET + "\n")
    return AuthConfig(
        modes=frozenset({"introspection"}),
        introspection_url=url,
        introspection_client_id=CLIENT_ID,
        introspection_client_secret_file=secret_file,
        fetch_timeout_s=2.0,
        **extra,
    )


async def test_active_token_is_accepted_and_cached(idp: Introspection, tmp_path: Path) -> None:
    cfg = config(tmp_path, idp.url)
    assert cfg.problems() == []
    async with httpx.AsyncClient() as http:
        auth = Authenticator.from_config(cfg, http)
        principal = await auth.authenticate("Bearer good-token")
        assert (principal.client_id, principal.subject, principal.scopes) == (
            "billing",
            "u1",
            frozenset({"chat"}),
        )
        for _ in range(10):
            await auth.authenticate("Bearer good-token")
    assert idp.calls == 1
    assert idp.bad_auth == 0


async def test_inactive_token_is_refused_and_negative_cache_is_short(
    idp: Introspection, tmp_path: Path
) -> None:
    async with httpx.AsyncClient() as http:
        auth = Authenticator.from_config(config(tmp_path, idp.url, introspection_negative_ttl_s=0.2), http)
        for _ in range(2):
            with pytest.raises(AuthError) as info:
                await auth.authenticate("Bearer revoked-token")
            assert (info.value.reason, info.value.status) == ("inactive", 401)
        assert idp.calls == 1
        await asyncio.sleep(0.3)
        with pytest.raises(AuthError):
            await auth.authenticate("Bearer revoked-token")
        assert idp.calls == 2


async def test_audience_is_enforced_when_configured(idp: Introspection, tmp_path: Path) -> None:
    async with httpx.AsyncClient() as http:
        auth = Authenticator.from_config(config(tmp_path, idp.url, introspection_audience="menshen"), http)
        assert (await auth.authenticate("Bearer good-token")).client_id == "billing"
        with pytest.raises(AuthError, match="bad_audience"):
            await auth.authenticate("Bearer other-aud")


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_endpoint_down_fails_closed_with_503(tmp_path: Path) -> None:
    async with httpx.AsyncClient() as http:
        auth = Authenticator.from_config(
            config(tmp_path, f"http://127.0.0.1:{_unused_port()}/introspect"), http
        )
        with pytest.raises(AuthError) as info:
            await auth.authenticate("Bearer good-token")
    assert (info.value.reason, info.value.status) == ("introspection_unavailable", 503)


async def test_wrong_gateway_credentials_fail_closed(idp: Introspection, tmp_path: Path) -> None:
    cfg = config(tmp_path, idp.url).model_copy(update={"introspection_client_id": "wrong"})
    async with httpx.AsyncClient() as http:
        auth = Authenticator.from_config(cfg, http)
        with pytest.raises(AuthError) as info:
            await auth.authenticate("Bearer good-token")
    assert info.value.status == 503
    assert idp.bad_auth == 1
