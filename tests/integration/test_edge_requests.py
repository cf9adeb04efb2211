"""Request checks at the edge: Content-Type, Host with --auth none, forwarded headers, credentials in
the upstream URL, 499 for an abandoned upload, int64 bounds, Retry-After on 503."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fakes.engine import FakeEngine
from tests.support.edge_server import capture_logs, connect, serve_edge
from tests.support.gateway import RunningGateway, wait_for
from tests.support.ports import free_port

CHAT = {"model": "qwen3-8b", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def engine() -> Iterator[FakeEngine]:
    with FakeEngine(models=("qwen3-8b",)) as fake:
        yield fake


@pytest.fixture
def gateway(engine: FakeEngine, tmp_path: Path) -> Iterator[RunningGateway]:
    with serve_edge(tmp_path, engine.url) as running:
        yield running


def _error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status
    body = response.json()["error"]
    assert body["code"] == code
    assert body["message"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_json_routes_refuse_other_content_types(gateway: RunningGateway, content_type: str | None) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = httpx.post(
        gateway.api + "/chat/completions", content=httpx.Response(200, json=CHAT).content, headers=headers
    )
    _error(response, 415, "unsupported_media_type")


def test_json_with_a_charset_is_served(gateway: RunningGateway) -> None:
    response = httpx.post(
        gateway.api + "/chat/completions",
        content=httpx.Response(200, json=CHAT).content,
        headers={"content-type": "application/json; charset=utf-8"},
        timeout=10,
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:8080", "localhost:1.evil.example", "10.0.0.1"]
)
def test_without_auth_only_loopback_hosts_are_answered(gateway: RunningGateway, host: str) -> None:
    response = httpx.post(gateway.api + "/chat/completions", json=CHAT, headers={"host": host})
    _error(response, 421, "misdirected_request")


def test_without_auth_loopback_hosts_are_served(gateway: RunningGateway) -> None:
    port = gateway.settings.server.port
    for host in (f"127.0.0.1:{port}", "localhost", f"localhost:{port}", f"[::1]:{port}"):
        response = httpx.post(
            gateway.api + "/chat/completions", json=CHAT, headers={"host": host}, timeout=10
        )
        assert response.status_code == 200, host


@pytest.mark.parametrize("field", ["top_k", "seed"])
def test_integers_above_int64_are_refused(gateway: RunningGateway, engine: FakeEngine, field: str) -> None:
    before = engine.requests_total
    response = httpx.post(gateway.api + "/chat/completions", json={**CHAT, field: 2**63})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert engine.requests_total == before
    served = httpx.post(gateway.api + "/chat/completions", json={**CHAT, field: 2**63 - 1}, timeout=10)
    assert served.status_code == 200


def test_every_503_carries_retry_after(tmp_path: Path) -> None:
    with serve_edge(tmp_path, f"http://127.0.0.1:{free_port()}") as gateway:  # no engine there
        response = httpx.get(gateway.url + "/readyz", timeout=10)
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) >= 1


def test_upstream_credentials_are_never_shown(engine: FakeEngine, tmp_path: Path) -> None:
    upstream = engine.url.replace("http://", "http://menshen-user:s3cr3t-pass@")
    with capture_logs() as logs, serve_edge(tmp_path, upstream) as gateway:
        ready = httpx.get(gateway.url + "/readyz", timeout=10)
        httpx.post(gateway.api + "/chat/completions", json=CHAT, timeout=10)
    assert ready.json()["engine"]["url"] == engine.url.rstrip("/")
    for shown in (ready.text, logs.text()):
        assert "menshen-user" not in shown
        assert "s3cr3t-pass" not in shown


def _token_attempt(gateway: RunningGateway, forwarded_for: str) -> int:
    response = httpx.post(
        gateway.url + "/oauth/token",
        data={"grant_type": "password"},
        headers={"x-forwarded-for": forwarded_for},
    )
    return response.status_code


@pytest.mark.parametrize(("allow", "third"), [(None, 429), ("127.0.0.1", 400)])
def test_forwarded_for_counts_only_from_configured_proxies(
    engine: FakeEngine, tmp_path: Path, allow: str | None, third: int
) -> None:
    # The per-address token limit counts the address the gateway believes: two attempts per minute.
    with serve_edge(
        tmp_path, engine.url, auth="builtin", token_attempts_per_address="2/minute", forwarded_allow_ips=allow
    ) as gateway:
        assert _token_attempt(gateway, "203.0.113.1") == 400
        assert _token_attempt(gateway, "203.0.113.1") == 400
        assert _token_attempt(gateway, "203.0.113.2") == third


def test_a_client_that_leaves_during_the_upload_is_logged_499(engine: FakeEngine, tmp_path: Path) -> None:
    with capture_logs() as logs, serve_edge(tmp_path, engine.url) as gateway:
        sock = connect(gateway)
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b'Content-Length: 1000\r\n\r\n{"model":'
        )
        time.sleep(0.2)  # the app is reading the body
        sock.close()
        wait_for(lambda: any(line["path"] == "/v1/chat/completions" for line in logs.access()), within=10)
    statuses = [line["status"] for line in logs.access() if line["path"] == "/v1/chat/completions"]
    assert statuses == [499]
