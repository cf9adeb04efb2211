"""The HR assistant for real: ``python -m examples.hr_assistant`` ─► gateway ─► vLLM CPU (SmolLM2 chat and
all-MiniLM-L6-v2 embeddings), with the app's own OAuth client of the built-in issuer.

Needs the session's chat engine (``engine_supervisor``) and embeddings engine (``embeddings_supervisor``), and
the gateway built from both (``AppParts(supervisors=...)``); skipped while either is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine import EngineSupervisor
from gateway.app import AppParts
from gateway.cli import main as gateway_cli
from tests.support.e2e import ENGINE_START_TIMEOUT_S
from tests.support.gateway import DEFAULT_POLICIES, RunningGateway, gateway_settings, run_gateway

pytestmark = [pytest.mark.engine, pytest.mark.timeout(ENGINE_START_TIMEOUT_S * 2 + 300)]

REPO = Path(__file__).resolve().parents[2]
HANDBOOK = REPO / "examples" / "hr_assistant" / "handbook"
HR_CLIENT: dict[str, Any] = {
    "tier": "standard",
    "models": ["smollm2-135m-instruct", "all-minilm-l6-v2"],
    "scopes": ["llm.chat", "llm.embeddings"],
    "endpoints": ["chat", "embeddings"],
}


@pytest.fixture(scope="module")
def hr_gateway(
    request: pytest.FixtureRequest,
    engine_supervisor: EngineSupervisor,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningGateway]:
    try:
        embeddings: EngineSupervisor = request.getfixturevalue("embeddings_supervisor")
    except pytest.FixtureLookupError:
        pytest.skip("no embeddings engine fixture (embeddings_supervisor) yet")
    data = tmp_path_factory.mktemp("hr-e2e")
    policies = data / "policies"
    shutil.copytree(DEFAULT_POLICIES, policies)
    clients = yaml.safe_load((policies / "clients.yaml").read_text(encoding="utf-8"))
    clients["clients"].setdefault("hr-assistant", HR_CLIENT)
    (policies / "clients.yaml").write_text(yaml.safe_dump(clients), encoding="utf-8")
    settings = gateway_settings(
        data,
        engine_supervisor.base_url,
        auth="builtin",
        policies=policies,
        first_token_timeout=120.0,
        idle_timeout=60.0,
    )
    parts = AppParts(supervisors=(engine_supervisor, embeddings))
    with run_gateway(settings, parts) as gateway:
        yield gateway


def _secret(gateway: RunningGateway, capsys: pytest.CaptureFixture[str]) -> str:
    scopes = ["--scope", "llm.chat", "--scope", "llm.embeddings"]
    assert (
        gateway_cli(
            [
                "client",
                "add",
                "hr-assistant",
                *scopes,
                "--replace",
                "--data-dir",
                str(gateway.settings.data_dir),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    return next(
        line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("client_secret:")
    )


def _app(gateway: RunningGateway, secret: str, db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HR_CLIENT_SECRET": secret}
    return subprocess.run(
        [sys.executable, "-m", "examples.hr_assistant", "--gateway", gateway.url, "--db", str(db), *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=env,
        cwd=REPO,
        timeout=600,
        check=False,
    )


def test_handbook_question_ranks_its_section_first_and_streams_an_answer(
    hr_gateway: RunningGateway, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = _secret(hr_gateway, capsys)
    db = tmp_path / "index.sqlite3"
    ingest = _app(hr_gateway, secret, db, "ingest", str(HANDBOOK))
    assert ingest.returncode == 0, ingest.stderr
    ask = _app(
        hr_gateway,
        secret,
        db,
        "ask",
        "--json",
        "--max-tokens",
        "120",
        "How many days of annual leave do I get after 12 years of service?",
    )
    assert ask.returncode == 0, ask.stderr
    result = json.loads(ask.stdout)
    assert result["sources"][0]["id"] == "annual-leave"
    assert result["answer"].strip()
