"""A guard model rule against real vLLM on CPU, with the demo chat model standing in for Qwen3Guard.

Its verdicts mean nothing, but vLLM's structured output makes them parse: the guard is called, its verdict is
read, and the request's fate follows the verdict (served when allowed or flagged, 400 `content_filter` naming
the rule when blocked). Never a guard error.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from engine import EngineSupervisor
from gateway.app import AppParts
from tests.support.e2e import ENGINE_START_TIMEOUT_S
from tests.support.gateway import DEFAULT_POLICIES, RunningGateway, gateway_settings, run_gateway

pytestmark = [pytest.mark.engine, pytest.mark.timeout(ENGINE_START_TIMEOUT_S + 300)]
RULE = "guard.standin"


@pytest.fixture(scope="module")
def guarded(
    engine_supervisor: EngineSupervisor, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningGateway]:
    root = Path(tmp_path_factory.mktemp("guard-e2e"))
    key_file = root / "guard.key"
    key_file.write_text(engine_supervisor.api_key + "\n", encoding="utf-8")
    bundle = root / "bundle"
    shutil.copytree(DEFAULT_POLICIES, bundle)
    rules_file = bundle / "guardrails.yaml"
    data = yaml.safe_load(rules_file.read_text(encoding="utf-8"))
    data["rules"].append(
        {
            "id": RULE,
            "kind": "classifier",
            "engine": {"url": engine_supervisor.base_url + "/v1", "key_file": str(key_file)},
            "model": engine_supervisor.served_model_name,
            "where": ["input"],
            "categories": {"Violent": "block"},
            "other": "flag",
            "controversial": "flag",
            "timeout_ms": 60000,
            "on_error": "block",
        }
    )
    rules_file.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    settings = gateway_settings(
        root, engine_supervisor.base_url, policies=bundle, first_token_timeout=120.0, idle_timeout=60.0
    )
    parts = AppParts(supervisor=engine_supervisor, engine_api_key=engine_supervisor.api_key)
    with run_gateway(settings, parts) as gateway:
        yield gateway


def _guard_outcomes(gateway: RunningGateway) -> dict[str, float]:
    text = httpx.get(gateway.url + "/metrics", timeout=10).text
    outcomes: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "menshen_guard_calls_total" and sample.labels.get("rule") == RULE:
                outcomes[sample.labels["outcome"]] = sample.value
    return outcomes


def test_the_guard_is_asked_its_verdict_parses_and_the_request_follows_it(
    guarded: RunningGateway, engine_supervisor: EngineSupervisor
) -> None:
    response = httpx.post(
        guarded.api + "/chat/completions",
        json={
            "model": engine_supervisor.served_model_name,
            "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "max_tokens": 8,
            "temperature": 0,
        },
        timeout=180,
    )
    outcomes = _guard_outcomes(guarded)
    assert sum(outcomes.values()) == 1, outcomes  # asked once
    (outcome,) = outcomes
    assert outcome in {"allow", "flag", "block"}, outcome  # parsed: never a guard error
    if outcome == "block":
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "content_filter"
        assert RULE in response.json()["error"]["message"]
    else:
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"]["content"]
