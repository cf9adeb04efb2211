"""One configuration for every command: what `gateway token` mints, `gateway serve` with the same settings
accepts, whether the port comes from a flag or from ``GATEWAY_PORT``."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.cli import build_parser
from gateway.settings import OPTIONS
from tests.fakes.engine import FakeEngine
from tests.support.gateway import REPO, wait_for
from tests.support.ports import free_port

MESSAGES = [{"role": "user", "content": "Hello"}]


@pytest.fixture
def engine() -> Iterator[FakeEngine]:
    with FakeEngine(models=("qwen3-8b",)) as fake:
        yield fake


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(extra)
    return env


def _serve(port: int, data_dir: Path, upstream: str, log: Path) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "gateway", "serve", "--port", str(port), "--upstream", upstream]
    with log.open("wb") as out:
        return subprocess.Popen(
            [*args, "--data-dir", str(data_dir)], cwd=REPO, env=_env(), stdout=out, stderr=subprocess.STDOUT
        )


def _token(data_dir: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "token",
            "--client",
            "demo-app",
            "--data-dir",
            str(data_dir),
            *args,
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.parametrize("via", ["flag", "variable"])
def test_a_token_minted_for_a_port_is_accepted_by_the_gateway_on_that_port(
    engine: FakeEngine, tmp_path: Path, via: str
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _serve(port, tmp_path, engine.url, tmp_path / "serve.log")
    try:
        wait_for(lambda: _healthy(url), within=60, interval=0.1)
        if via == "flag":
            minted = _token(tmp_path, "--port", str(port), env=_env())
        else:
            minted = _token(tmp_path, env=_env(GATEWAY_PORT=str(port)))
        assert minted.returncode == 0, minted.stderr
        response = httpx.post(
            url + "/v1/chat/completions",
            json={"model": "qwen3-8b", "messages": MESSAGES},
            headers={"Authorization": f"Bearer {minted.stdout.strip()}"},
            timeout=20,
        )
        assert response.status_code == 200, response.text
        # A token minted for another port names another issuer: the gateway refuses it.
        other = _token(tmp_path, "--port", str(port + 1), env=_env())
        refused = httpx.post(
            url + "/v1/chat/completions",
            json={"model": "qwen3-8b", "messages": MESSAGES},
            headers={"Authorization": f"Bearer {other.stdout.strip()}"},
            timeout=20,
        )
        assert refused.status_code == 401
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_token_for_a_client_no_policy_names_says_so_and_fails(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "token", "--client", "nobody", "--data-dir", str(tmp_path)],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert result.stdout == ""  # no token printed
    assert "no client 'nobody'" in result.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["serve"],
        ["up"],
        ["token", "--client", "x"],
        ["client", "add", "x"],
        ["keys", "rotate"],
        ["audit", "verify"],
    ],
)
def test_every_command_takes_the_same_settings_flags(argv: list[str]) -> None:
    parser = build_parser()
    managed = {"upstream", "upstream_api_key_file"} if argv == ["up"] else set()
    for opt in OPTIONS:
        if opt.name in managed:
            continue
        args = parser.parse_args([*argv, opt.flag, "1"])
        assert getattr(args, f"setting_{opt.name}") == "1", opt.flag
