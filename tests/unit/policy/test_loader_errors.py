"""Every kind of problem is reported with its file and line, and all of them at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.policy import PolicyError, PolicyLoadError, load_bundle
from tests.support.policy import VALID_BUNDLE, write_bundle


def errors_of(root: Path) -> list[PolicyError]:
    with pytest.raises(PolicyLoadError) as info:
        load_bundle(root)
    return list(info.value.errors)


GUARDRAIL_HEAD = "rules:\n  - id: a.one\n    kind: words\n    category: c\n    action: block\n"

CASES: list[tuple[str, dict[str, str], str, int, str]] = [
    (
        "bad yaml",
        {"limits.yaml": "tiers:\n  standard:\n    requests: [60/minute\n  x: 1\n"},
        "limits.yaml",
        4,
        "invalid YAML",
    ),
    (
        "unknown key",
        {"limits.yaml": "tiers:\n  standard:\n    requests: 1/second\n    burst: 3\n"},
        "limits.yaml",
        4,
        "tiers.standard.burst: unknown key",
    ),
    (
        "wrong type",
        {"generation.yaml": "max_tokens_cap: 100\ndefault_max_tokens: lots\n"},
        "generation.yaml",
        2,
        "default_max_tokens",
    ),
    (
        "top level not a mapping",
        {"generation.yaml": "- 1\n- 2\n"},
        "generation.yaml",
        1,
        "top level must be a mapping",
    ),
    (
        "duplicate yaml key",
        {"generation.yaml": "max_tokens_cap: 100\nmax_tokens_cap: 200\n"},
        "generation.yaml",
        2,
        "duplicate key",
    ),
    (
        "yaml alias",
        {"generation.yaml": "thinking: &s {temperature: 0.5}\nnon_thinking: *s\n"},
        "generation.yaml",
        2,
        "aliases",
    ),
    (
        "duplicate rule id",
        {"guardrails.yaml": GUARDRAIL_HEAD + "    words: [x]\n" + GUARDRAIL_HEAD[7:] + "    words: [y]\n"},
        "guardrails.yaml",
        7,
        "duplicate rule id 'a.one' (first at line 2)",
    ),
    (
        "missing list",
        {"guardrails.yaml": GUARDRAIL_HEAD + "    lists: [secrets, nope]\n"},
        "guardrails.yaml",
        6,
        "list 'nope' not found",
    ),
    (
        "pattern does not compile",
        {
            "guardrails.yaml": "rules:\n  - id: p\n    kind: pattern\n    category: c\n"
            "    action: mask\n    pattern: '([a-z]'\n"
        },
        "guardrails.yaml",
        6,
        "does not compile",
    ),
    (
        "catastrophic pattern",
        {
            "guardrails.yaml": "rules:\n  - id: p\n    kind: pattern\n    category: c\n"
            "    action: mask\n    pattern: '(a|aa)+$'\n"
        },
        "guardrails.yaml",
        6,
        "catastrophically slow",
    ),
    (
        "pattern matching empty",
        {
            "guardrails.yaml": "rules:\n  - id: p\n    kind: pattern\n    category: c\n"
            "    action: mask\n    pattern: 'x*'\n"
        },
        "guardrails.yaml",
        6,
        "empty string",
    ),
    (
        "invisible word in list",
        {"lists/secrets.txt": "ok\n# c\n\u200b\u200b\n"},
        "lists/secrets.txt",
        3,
        "empty word",
    ),
    ("NUL word in list", {"lists/secrets.txt": "ok\nbad\x00word\n"}, "lists/secrets.txt", 2, "NUL"),
    (
        "empty inline word",
        {"guardrails.yaml": GUARDRAIL_HEAD + "    words:\n      - fine\n      - ' '\n"},
        "guardrails.yaml",
        8,
        "empty word",
    ),
    (
        "NUL inline word",
        {"guardrails.yaml": GUARDRAIL_HEAD + '    words: ["a\\0b"]\n'},
        "guardrails.yaml",
        6,
        "NUL",
    ),
    (
        "rate does not parse",
        {"limits.yaml": "tiers:\n  standard:\n    tokens: 100/fortnight\n"},
        "limits.yaml",
        3,
        "fortnight",
    ),
    (
        "client per-client rate does not parse",
        {"clients.yaml": "clients:\n  a:\n    tier: standard\n    limits:\n      requests: lots\n"},
        "clients.yaml",
        5,
        "requests",
    ),
    (
        "unknown tier",
        {"clients.yaml": "clients:\n  a:\n    tier: gold\n"},
        "clients.yaml",
        3,
        "unknown tier 'gold'",
    ),
    (
        "unknown scope tier",
        {"clients.yaml": "scopes:\n  s:\n    tier: gold\n"},
        "clients.yaml",
        3,
        "unknown tier",
    ),
    (
        "override names unknown rule",
        {
            "clients.yaml": "clients:\n  a:\n    tier: standard\n    guardrails:\n"
            "      disable: [demo.banned, no.such.rule]\n"
        },
        "clients.yaml",
        5,
        "unknown guardrail rule 'no.such.rule'",
    ),
    (
        "caps inconsistent",
        {"generation.yaml": "max_tokens_cap: 100\ndefault_max_tokens: 200\n"},
        "generation.yaml",
        2,
        "default_max_tokens is larger",
    ),
    ("unknown section file", {"guardrail.yaml": "rules: []\n"}, "guardrail.yaml", 1, "unknown policy file"),
]


@pytest.mark.parametrize(
    ("files", "file", "line", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_error_reported_with_file_and_line(
    tmp_path: Path, files: dict[str, str], file: str, line: int, message: str
) -> None:
    root = write_bundle(tmp_path / "b", {**VALID_BUNDLE, **files})
    errors = errors_of(root)
    matching = [e for e in errors if e.file == file and message in e.message]
    assert matching, f"no error in {file} containing {message!r}: {errors}"
    assert matching[0].line == line, errors


def test_non_utf8_list_reports_line(tmp_path: Path) -> None:
    root = write_bundle(tmp_path / "b", VALID_BUNDLE)
    (root / "lists" / "secrets.txt").write_bytes(b"one\ntwo\n\xff\xfe\n")
    errors = errors_of(root)
    assert [(e.file, e.line) for e in errors if "UTF-8" in e.message] == [("lists/secrets.txt", 3)]


def test_unreadable_file_is_an_error(tmp_path: Path) -> None:
    root = write_bundle(tmp_path / "b", VALID_BUNDLE)
    (root / "audit.yaml").symlink_to(root / "missing-target.yaml")
    errors = errors_of(root)
    assert [(e.file, e.line) for e in errors if "cannot read" in e.message] == [("audit.yaml", 1)]


def test_every_problem_reported_at_once(tmp_path: Path) -> None:
    root = write_bundle(
        tmp_path / "b",
        {
            **VALID_BUNDLE,
            "guardrails.yaml": "rules:\n  - id: p\n    kind: pattern\n    category: c\n    action: mask\n"
            "    pattern: '('\n",
            "generation.yaml": "max_tokens_cap: many\n",
            "lists/secrets.txt": "a\x00\n",
            "clients.yaml": "clients:\n  a:\n    tier: nope\n",
        },
    )
    files = {e.file for e in errors_of(root)}
    assert files == {"guardrails.yaml", "generation.yaml", "lists/secrets.txt", "clients.yaml"}


def test_missing_directory_and_empty_directory(tmp_path: Path) -> None:
    assert "not found" in errors_of(tmp_path / "absent")[0].message
    (tmp_path / "empty").mkdir()
    assert "no policy files" in errors_of(tmp_path / "empty")[0].message


def test_error_formats_as_file_line_message() -> None:
    assert str(PolicyError("limits.yaml", 3, "bad")) == "limits.yaml:3: bad"
