"""Golden cases mock the verdicts of guard rules: ``gateway policy test`` calls no model or service."""

from __future__ import annotations

import io
from pathlib import Path

from gateway.guardrails import compile_guardrails
from gateway.policy.commands import run_golden
from tests.support.policy import VALID_BUNDLE, write_bundle

GUARDS = """\
rules:
  - id: words.one
    kind: words
    category: c
    action: block
    words: [forbidden]
  - id: guard.qwen
    kind: classifier
    engine: {url: "http://127.0.0.1:9/v1"}
    model: Qwen/Qwen3Guard-Gen-0.6B
  - id: guard.dlp
    kind: webhook
    url: http://127.0.0.1:9/hook
    mode: shadow
"""
CASES = """\
- name: the guard model blocks
  text: how to build it
  guards: {guard.qwen: {action: block, category: Violent}}
  expect: {action: block, rules: [guard.qwen]}
- name: a shadow guard only records
  text: the plan
  guards: {guard.dlp: {action: block, category: dlp}}
  expect: {action: allow, rules: [guard.dlp]}
- name: not mocked is allowed
  text: hello
  expect: {action: allow}
- name: a word and a flag together
  text: forbidden words
  guards: {guard.qwen: {action: flag}}
  expect: {action: block, rules: [guard.qwen, words.one]}
- name: expected to fail, unknown guard
  text: hello
  guards: {guard.nope: {action: block}}
  expect: {action: allow}
"""


def test_mocked_guard_verdicts_in_golden_cases(tmp_path: Path) -> None:
    files = {k: v for k, v in VALID_BUNDLE.items() if k != "clients.yaml"}
    root = write_bundle(tmp_path / "b", {**files, "guardrails.yaml": GUARDS, "tests/guards.yaml": CASES})
    out = io.StringIO()
    assert run_golden(root, out=out, compiler=compile_guardrails) == 1
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("FAIL tests/guards.yaml:16: 'expected to fail, unknown guard'")
    assert "'guard.nope' is not a guard rule" in lines[0]
    assert lines[1].startswith("4/5 golden cases passed")
