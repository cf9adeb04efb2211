"""Faults, injected while the gateway serves: each is answered as docs/operations/faults.md says, and the
gateway recovers without a restart.

Real sockets throughout: the gateway under uvicorn, the fake engine (a separate process where it is
killed), real Redis behind a TCP proxy the test cuts, a local JWKS server that stalls, an OTLP endpoint on
a closed port. Every wait is bounded; assertions are on outcomes, never on durations.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from tests.fakes.engine import FakeEngine
from tests.support.gateway import REPO, RunningGateway, free_port, gateway_settings, run_gateway, wait_for
from tests.support.redis import RedisProxy, purge, unique_prefix
from tests.support.replicas import Bundle

# Every fault and its recovery fit well inside this on a busy 2-core machine; a hang fails the test.
pytestmark = pytest.mark.timeout(120)

MODEL = "qwen3-8b"
CHAT = "/chat/completions"


def chat(
    gateway: RunningGateway, content: str = "hi", headers: dict[str, str] | None = None
) -> httpx.Response:
    body = {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 16}
    return httpx.post(gateway.api + CHAT, json=body, headers=headers, timeout=15)


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code and error["message"]
    if status == 503:
        assert int(response.headers["retry-after"]) >= 1
    return error


def readyz(gateway: RunningGateway) -> httpx.Response:
    return httpx.get(gateway.url + "/readyz", timeout=10)


def metric(gateway: RunningGateway, line_start: str) -> float:
    """The value of the first ``/metrics`` sample whose line starts with ``line_start`` (0 when absent)."""
    for line in httpx.get(gateway.url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.fixture
def engine() -> Iterator[FakeEngine]:
    with FakeEngine(models=(MODEL,)) as fake:
        yield fake


@pytest.fixture
def bundle(tmp_path: Path) -> Bundle:
    return Bundle(tmp_path / "policies")


# --- the engine killed mid-stream ------------------------------------------------------------------


def start_engine_process(port: int) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "tests.fakes.engine", "--port", str(port), "--model", MODEL]
    command += ["--rate", "20", "--tokens", "2000", "--no-uvloop"]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def serving() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(serving, within=20.0, interval=0.1)
    return proc


def test_engine_killed_mid_stream_ends_with_one_error_event_then_recovers(tmp_path: Path) -> None:
    port = free_port()
    proc = start_engine_process(port)
    try:
        with run_gateway(gateway_settings(tmp_path, f"http://127.0.0.1:{port}")) as gateway:
            assert readyz(gateway).status_code == 200
            body = {"model": MODEL, "messages": [{"role": "user", "content": "tell"}], "stream": True}
            events: list[str] = []
            with httpx.stream("POST", gateway.api + CHAT, json=body, timeout=20) as response:
                assert response.status_code == 200
                for line in response.iter_lines():
                    if not line.startswith("data: "):
                        continue
                    events.append(line[6:])
                    if len(events) == 3:
                        proc.send_signal(signal.SIGKILL)
                        proc.wait(10)
            errors = [json.loads(e)["error"] for e in events if e.startswith('{"error"')]
            assert len(errors) == 1 and events[-1].startswith('{"error"'), events[-3:]
            assert errors[0]["code"] == "service_unavailable"
            assert "[DONE]" not in events
            wait_for(lambda: readyz(gateway).status_code == 503, within=10.0, interval=0.1)
            assert readyz(gateway).json()["reasons"]
            assert_error(chat(gateway), 503, "engine_unavailable")

            proc = start_engine_process(port)  # the engine comes back on the same address
            wait_for(lambda: readyz(gateway).status_code == 200, within=10.0, interval=0.1)
            assert chat(gateway).status_code == 200
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)


# --- Redis cut and restored, Redis slow ------------------------------------------------------------


class CutProxy:
    """A RedisProxy on a loop of its own thread that the test can cut (connections closed, port refused)
    and restore on the same port, as Redis being stopped and started."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="redis-cut-proxy")
        self._thread.start()
        self.port = free_port()
        self.proxy: RedisProxy | None = None
        self.restore()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/15"

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    def cut(self) -> None:
        if self.proxy is not None:
            self._run(self.proxy.close())
            self.proxy = None

    def restore(self) -> None:
        self.proxy = self._run(RedisProxy(port=self.port).start())

    def slow(self, seconds: float) -> None:
        """Every reply from now on comes ``seconds`` late."""
        assert self.proxy is not None
        self.proxy.reply_delay_s = seconds
        self.proxy.delayed_replies = 1_000_000

    def fast(self) -> None:
        assert self.proxy is not None
        self.proxy.delayed_replies = 0

    def close(self) -> None:
        self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@pytest.fixture
def redis_proxy() -> Iterator[CutProxy]:
    proxy = CutProxy()
    yield proxy
    proxy.close()


@pytest.fixture
def prefix() -> Iterator[str]:
    key_prefix = unique_prefix()
    yield key_prefix
    asyncio.run(purge(key_prefix))


def redis_gateway(
    tmp_path: Path, engine: FakeEngine, bundle: Bundle, proxy: CutProxy, prefix: str, mode: str
) -> AbstractContextManager[RunningGateway]:
    bundle.set_limits({"requests": "1000/hour", "concurrency": 10}, on_redis_error=mode)
    settings = gateway_settings(
        tmp_path,
        engine.url,
        policies=bundle.root,
        redis_url=proxy.url,
        redis_key_prefix=prefix,
        redis_timeout_ms=300,  # roomy: the proxy and the gateway share 2 busy cores
        redis_probe_interval=0.3,
    )
    return run_gateway(settings)


EXPECTED_DURING_OUTAGE = {"fail_closed": (503, "ratelimit_unavailable"), "fail_open": (200, None)}


@pytest.mark.redis
@pytest.mark.parametrize("mode", ["fail_closed", "fail_open"])
@pytest.mark.parametrize("fault", ["stopped", "slow"])
def test_redis_fault_follows_on_redis_error_and_recovers(
    tmp_path: Path,
    engine: FakeEngine,
    bundle: Bundle,
    redis_proxy: CutProxy,
    prefix: str,
    mode: str,
    fault: str,
) -> None:
    with redis_gateway(tmp_path, engine, bundle, redis_proxy, prefix, mode) as gateway:
        assert chat(gateway).status_code == 200
        assert readyz(gateway).json()["status"] == "ready"
        if fault == "stopped":
            redis_proxy.cut()
        else:
            redis_proxy.slow(2.0)  # past the 300 ms command timeout
        status, code = EXPECTED_DURING_OUTAGE[mode]
        for _ in range(3):
            response = chat(gateway)
            if code is None:
                assert response.status_code == status, response.text
            else:
                assert_error(response, status, code)
        ready = readyz(gateway)
        assert ready.status_code == 200
        assert ready.json()["status"] == "degraded" and ready.json()["ratelimit"]["degraded"] is True
        assert httpx.get(gateway.url + "/healthz", timeout=5).status_code == 200

        if fault == "stopped":
            redis_proxy.restore()
        else:
            redis_proxy.fast()

        def recovered() -> bool:
            return chat(gateway).status_code == 200 and readyz(gateway).json()["status"] == "ready"

        wait_for(recovered, within=15.0, interval=0.3)


# --- the policy directory corrupted, then deleted --------------------------------------------------


def test_policy_corrupted_then_deleted_keeps_the_last_good_policy(
    tmp_path: Path, engine: FakeEngine, bundle: Bundle
) -> None:
    settings = gateway_settings(tmp_path, engine.url, policies=bundle.root)
    with run_gateway(settings) as gateway:
        version = readyz(gateway).json()["policy"]["version"]
        assert chat(gateway).status_code == 200
        (bundle.root / "limits.yaml").write_text("tiers: [this is: not a mapping\n", encoding="utf-8")

        def reload_failed() -> bool:
            return bool(readyz(gateway).json()["policy"]["last_error"])

        wait_for(reload_failed, within=10.0, interval=0.1)
        ready = readyz(gateway)
        assert ready.status_code == 200 and ready.json()["policy"]["version"] == version
        assert "limits.yaml" in json.dumps(ready.json()["policy"]["last_error"])
        assert metric(gateway, 'menshen_policy_reloads_total{result="failure"') >= 1
        assert chat(gateway).status_code == 200

        failures = metric(gateway, 'menshen_policy_reloads_total{result="failure"')
        shutil.rmtree(bundle.root)
        time.sleep(1.0)  # let the watcher see the deletion: the outcome below must not change
        ready = readyz(gateway)
        assert ready.status_code == 200 and ready.json()["policy"]["version"] == version
        assert metric(gateway, 'menshen_policy_reloads_total{result="failure"') >= failures
        assert chat(gateway).status_code == 200


# --- the audit log's disk unwritable ---------------------------------------------------------------


def make_unwritable(directory: Path) -> None:
    """Replace the audit directory by a plain file: opening a file under it fails with ENOTDIR, which
    holds for root too (permission bits and chattr do not stop root; a read-only bind mount needs
    privileges the tests do not have)."""
    shutil.rmtree(directory)
    directory.write_text("not a directory\n", encoding="utf-8")


def make_writable(directory: Path) -> None:
    directory.unlink()
    directory.mkdir()


def audit_gateway(
    tmp_path: Path, engine: FakeEngine, bundle: Bundle, on_failure: str
) -> tuple[AbstractContextManager[RunningGateway], Path]:
    (bundle.root / "audit.yaml").write_text(f"on_failure: {on_failure}\n", encoding="utf-8")
    audit_dir = tmp_path / "audit"
    audit_dir.mkdir()
    settings = gateway_settings(
        tmp_path, engine.url, policies=bundle.root, audit_log=audit_dir / "audit.jsonl"
    )
    return run_gateway(settings), audit_dir


BANNED = "禁词示例"  # policies/default/lists/violence.txt, rule words.violence (block): an audited decision


def test_audit_unwritable_with_block_refuses_traffic_and_recovers(
    tmp_path: Path, engine: FakeEngine, bundle: Bundle
) -> None:
    running, audit_dir = audit_gateway(tmp_path, engine, bundle, "block")
    with running as gateway:
        assert chat(gateway).status_code == 200
        make_unwritable(audit_dir)

        def refused() -> bool:
            return chat(gateway).status_code == 503

        wait_for(refused, within=10.0, interval=0.2)
        assert_error(chat(gateway), 503, "audit_unavailable")
        assert_error(chat(gateway, BANNED), 503, "audit_unavailable")
        ready = readyz(gateway)
        assert ready.status_code == 503
        assert ready.json()["audit"]["healthy"] is False
        assert any("audit" in reason for reason in ready.json()["reasons"])
        assert httpx.get(gateway.url + "/healthz", timeout=5).status_code == 200
        assert metric(gateway, "menshen_audit_failures_total") >= 1

        make_writable(audit_dir)
        wait_for(lambda: chat(gateway).status_code == 200, within=10.0, interval=0.2)
        assert readyz(gateway).json()["status"] == "ready"
        assert chat(gateway, BANNED).status_code == 400  # refused by the guardrail, and audited again
        records = (audit_dir / "audit.jsonl").read_text().splitlines()
        assert any(json.loads(r)["kind"] == "guardrail" for r in records)


def test_audit_unwritable_with_continue_serves_and_reports_degraded(
    tmp_path: Path, engine: FakeEngine, bundle: Bundle
) -> None:
    running, audit_dir = audit_gateway(tmp_path, engine, bundle, "continue")
    with running as gateway:
        assert chat(gateway, BANNED).status_code == 400  # opens the trail with a record
        make_unwritable(audit_dir)
        assert chat(gateway, BANNED).status_code == 400  # its record is lost, the answer is unchanged

        def degraded() -> bool:
            return readyz(gateway).json()["status"] == "degraded"

        wait_for(degraded, within=10.0, interval=0.2)
        ready = readyz(gateway)
        assert ready.status_code == 200 and ready.json()["audit"]["degraded"] is True
        assert chat(gateway).status_code == 200
        assert metric(gateway, "menshen_audit_failures_total") >= 1

        make_writable(audit_dir)
        wait_for(lambda: readyz(gateway).json()["status"] == "ready", within=10.0, interval=0.2)
        assert chat(gateway, BANNED).status_code == 400
        assert (audit_dir / "audit.jsonl").read_text().count('"kind":"guardrail"') >= 1


# --- the OTLP collector down -----------------------------------------------------------------------


def test_otlp_collector_down_leaves_requests_unaffected(
    tmp_path: Path, engine: FakeEngine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{free_port()}")  # nothing listens
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_on")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "2000")  # a batch every 2 s, as in production (5 s)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    requests = 30
    with caplog.at_level(logging.WARNING), run_gateway(gateway_settings(tmp_path, engine.url)) as gateway:
        statuses = [chat(gateway).status_code for _ in range(requests)]
        assert readyz(gateway).status_code == 200
    # the gateway's shutdown flushed the last batch into the closed port too
    assert statuses == [200] * requests
    exporter_lines = [r.getMessage() for r in caplog.records if r.name.startswith("opentelemetry")]
    assert any("Failed to export" in line for line in exporter_lines), exporter_lines
    assert len(exporter_lines) < requests / 3, exporter_lines  # per batch, not per request


# --- the JWKS endpoint slow ------------------------------------------------------------------------

AUDIENCE = "menshen"


class SlowIdP:
    """A JWKS endpoint on a real socket that answers after ``delay`` seconds."""

    def __init__(self, key: RSAKey) -> None:
        self.key = key
        self.delay = 0.0
        self.fetches = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.issuer = f"http://127.0.0.1:{self.server.server_address[1]}/realms/corp"
        self.jwks_url = self.issuer + "/protocol/openid-connect/certs"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True, name="slow-idp")

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        idp = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                return None

            def do_GET(self) -> None:
                idp.fetches += 1
                time.sleep(idp.delay)
                data = json.dumps({"keys": [idp.key.as_dict(private=False)]}).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the gateway gave up waiting

        return Handler

    def token(self) -> str:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": AUDIENCE,
            "azp": "billing",
            "sub": "service-account-billing",
            "iat": now,
            "exp": now + 300,
            "scope": "llm.chat llm.models",
        }
        header = {"alg": "RS256", "kid": self.key.kid, "typ": "JWT"}
        return jwt.encode(header, claims, self.key, algorithms=["RS256"])


@pytest.fixture
def slow_idp() -> Iterator[SlowIdP]:
    key = RSAKey.generate_key(2048, parameters={"kid": "corp-rsa-1", "use": "sig"})
    idp = SlowIdP(key)
    idp.thread.start()
    yield idp
    idp.delay = 0.0
    idp.server.shutdown()
    idp.server.server_close()


def jwt_gateway(
    tmp_path: Path, engine: FakeEngine, idp: SlowIdP, **more: Any
) -> AbstractContextManager[RunningGateway]:
    settings = gateway_settings(
        tmp_path,
        engine.url,
        auth="jwt",
        jwt_issuer=idp.issuer,
        jwt_audience=AUDIENCE,
        jwks_url=idp.jwks_url,
        auth_fetch_timeout=0.5,
        jwks_refetch_cooldown=0.5,
        **more,
    )
    return run_gateway(settings)


def test_jwks_slow_without_cached_keys_answers_503_then_recovers(
    tmp_path: Path, engine: FakeEngine, slow_idp: SlowIdP
) -> None:
    slow_idp.delay = 3.0  # past --auth-fetch-timeout 0.5
    with jwt_gateway(tmp_path, engine, slow_idp) as gateway:
        bearer = {"authorization": f"Bearer {slow_idp.token()}"}
        assert_error(chat(gateway, headers=bearer), 503, "auth_unavailable")
        slow_idp.delay = 0.0
        wait_for(lambda: chat(gateway, headers=bearer).status_code == 200, within=10.0, interval=0.3)


def test_jwks_slow_with_cached_keys_keeps_serving(
    tmp_path: Path, engine: FakeEngine, slow_idp: SlowIdP
) -> None:
    with jwt_gateway(tmp_path, engine, slow_idp, jwks_ttl=0.5) as gateway:
        bearer = {"authorization": f"Bearer {slow_idp.token()}"}
        assert chat(gateway, headers=bearer).status_code == 200  # keys fetched and cached
        slow_idp.delay = 3.0
        fetches = slow_idp.fetches
        time.sleep(0.6)  # the cached keys are stale now: the next request tries a refresh
        for _ in range(3):
            assert chat(gateway, headers=bearer).status_code == 200
        assert slow_idp.fetches > fetches  # a refresh was tried, timed out, and the cached keys served
