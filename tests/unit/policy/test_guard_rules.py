"""Classifier and webhook rules in guardrails.yaml: what loads, and what is refused with file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.policy import PolicyError, PolicyLoadError, load_bundle
from gateway.policy.sections import GUARD_STREAM_MODE_PLACES, GUARD_WIRED_WHERE, ClassifierRule, WebhookRule
from tests.support.policy import VALID_BUNDLE, write_bundle

CLASSIFIER = """\
rules:
  - id: guard.qwen
    kind: classifier
    engine: {url: "http://127.0.0.1:9/v1", key_file: /nonexistent}
    model: Qwen/Qwen3Guard-Gen-0.6B
    categories: {Violent: block, PII: flag}
    controversial: flag
    on_error: allow
    where: [WHERE]
"""
WEBHOOK = """\
rules:
  - id: guard.dlp
    kind: webhook
    url: https://dlp.internal/check
    secret_file: /etc/menshen/dlp.secret
    where: [input]
"""


def errors_of(root: Path) -> list[PolicyError]:
    with pytest.raises(PolicyLoadError) as info:
        load_bundle(root)
    return list(info.value.errors)


def bundle_with(tmp_path: Path, guardrails: str) -> Path:
    files = {k: v for k, v in VALID_BUNDLE.items() if k != "clients.yaml"}
    return write_bundle(tmp_path / "b", {**files, "guardrails.yaml": guardrails})


def test_classifier_and_webhook_rules_load(tmp_path: Path) -> None:
    both = CLASSIFIER.replace("WHERE", "input") + WEBHOOK.removeprefix("rules:\n")
    rules = load_bundle(bundle_with(tmp_path, both)).bundle.guardrails.rules
    classifier, webhook = rules
    assert isinstance(classifier, ClassifierRule) and isinstance(webhook, WebhookRule)
    assert classifier.categories == {"Violent": "block", "PII": "flag"}
    assert (classifier.on_error, webhook.on_error, webhook.where) == ("allow", "block", ["input"])


@pytest.mark.parametrize("where", ["input", "output", "reasoning", "tool_arguments"])
def test_guard_rules_load_at_every_place_the_gateway_runs_them(tmp_path: Path, where: str) -> None:
    assert where in GUARD_WIRED_WHERE
    (rule,) = load_bundle(bundle_with(tmp_path, CLASSIFIER.replace("WHERE", where))).bundle.guardrails.rules
    assert isinstance(rule, ClassifierRule)
    assert rule.where == [where]


@pytest.mark.parametrize("mode", ["hold", "watch"])
@pytest.mark.parametrize("where", ["output", "reasoning", "tool_arguments"])
def test_a_stream_mode_not_wired_at_a_place_is_refused(tmp_path: Path, mode: str, where: str) -> None:
    text = CLASSIFIER.replace("WHERE", where) + f"    stream_mode: {mode}\n"
    if where in GUARD_STREAM_MODE_PLACES[mode]:
        load_bundle(bundle_with(tmp_path, text))
        return
    errors = errors_of(bundle_with(tmp_path, text))
    assert [(e.line, f"stream_mode {mode!r} does not run at {where}" in e.message) for e in errors] == [
        (10, True)
    ], errors


def test_engine_needs_exactly_one_source(tmp_path: Path) -> None:
    text = CLASSIFIER.replace("WHERE", "input").replace(
        '{url: "http://127.0.0.1:9/v1", key_file: /nonexistent}', '{url: "http://x/v1", role: guard}'
    )
    errors = errors_of(bundle_with(tmp_path, text))
    assert any(e.line == 4 and "either 'url'" in e.message for e in errors), errors


def test_a_webhook_needs_a_url(tmp_path: Path) -> None:
    errors = errors_of(bundle_with(tmp_path, WEBHOOK.replace("    url: https://dlp.internal/check\n", "")))
    assert any("url" in e.message and "Field required" in e.message for e in errors), errors
