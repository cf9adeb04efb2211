"""The watcher ignores editor temporary files and golden tests; bundle files trigger a reload."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.policy.watcher import is_policy_change

ROOT = Path("/srv/policies")


@pytest.mark.parametrize(
    "name",
    ["guardrails.yaml", "lists/words.txt", "lists", "..data", "limits.yaml.new-name.yaml"],
)
def test_bundle_changes_trigger(name: str) -> None:
    assert is_policy_change(ROOT, str(ROOT / name))


@pytest.mark.parametrize(
    "name",
    [
        ".guardrails.yaml.swp",
        ".guardrails.yaml.swx",
        "guardrails.yaml~",
        "4913",
        ".#guardrails.yaml",
        "#guardrails.yaml#",
        "guardrails.yaml.tmp",
        "lists/words.txt.bak",
        "guardrails.yaml___jb_tmp___",
        "tests/cases.yaml",
        "tests",
        ".git/index",
    ],
)
def test_editor_temp_files_and_tests_are_ignored(name: str) -> None:
    assert not is_policy_change(ROOT, str(ROOT / name))
