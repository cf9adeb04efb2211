"""Fixtures of the fuzz: one gateway per module with the built-in issuer (so that /oauth/* are served), a
client token, limits that never throttle, short edge timeouts, and its logs captured."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from gateway.auth.clientstore import ClientStore
from tests.fakes.engine import FakeEngine
from tests.fuzz.checks import check_logs
from tests.fuzz.seed import fuzz_seed
from tests.fuzz.target import MODEL, Target
from tests.perf._bench_common import bench_policies
from tests.support.edge_server import capture_logs, serve_edge


def _seed_line() -> str:
    return f"fuzz seed: {fuzz_seed()} (replay with FUZZ_SEED={fuzz_seed()})"


def pytest_report_header() -> str:
    return _seed_line()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    terminalreporter.write_line(_seed_line())  # also under -q, which hides the header


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    tmp = tmp_path_factory.mktemp("fuzz")
    policies = bench_policies(tmp / "policies", passthrough=False)
    secret = ClientStore(tmp / "client-secrets.yaml").add("fuzz", ["llm.chat", "llm.models"])
    with (
        FakeEngine(models=(MODEL,)) as engine,
        capture_logs() as logs,
        serve_edge(
            tmp / "data",
            engine.url,
            auth="builtin",
            policies=policies,
            auth_key_file=tmp / "issuer-keys.json",
            auth_secrets_file=tmp / "client-secrets.yaml",
            token_attempts_per_address="1000000/minute",
            token_failures_per_client="1000000/minute",
            header_timeout=2.0,
            body_timeout=2.0,
            keepalive_timeout=1,  # requests without "connection: close" end soon
        ) as gateway,
    ):
        issued = httpx.post(
            gateway.url + "/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=("fuzz", secret),
            timeout=30,
        )
        assert issued.status_code == 200, issued.text
        running = Target(gateway, engine, issued.json()["access_token"], logs)
        yield running
        running.assert_alive()
        assert not engine.errors
    check_logs(logs.text())


@pytest.fixture(scope="module")
def http(target: Target) -> Iterator[httpx.Client]:
    """A kept-alive client of the gateway under fuzz (for bodies; headers go over bare sockets)."""
    with httpx.Client(base_url=target.gateway.url, timeout=20) as client:
        yield client
