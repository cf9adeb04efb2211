"""A valid bundle loads into the typed model; its version is a content hash of the policy files."""

from __future__ import annotations

import hashlib
from pathlib import Path

from gateway.policy import bundle_version, load_bundle
from gateway.policy.sections import PatternRule, WordRule
from gateway.policy.yamlsource import parse_yaml
from tests.support.policy import VALID_BUNDLE, write_bundle

REPO = Path(__file__).resolve().parents[3]


def test_valid_bundle_loads(bundle_dir: Path) -> None:
    loaded = load_bundle(bundle_dir)
    bundle = loaded.bundle
    assert bundle.limits.tiers["standard"].concurrency == 4
    assert bundle.clients.clients["demo-app"].tier == "standard"
    assert bundle.word_lists == {"secrets": ("sesame", "open-sesame")}
    kinds = {rule.id: type(rule) for rule in bundle.guardrails.rules}
    assert kinds == {"demo.secret": WordRule, "demo.banned": WordRule, "pii.cn_mobile": PatternRule}
    assert bundle.generation.max_tokens_cap == 2048
    assert bundle.loops.enabled  # absent file: defaults
    assert loaded.files == (
        "clients.yaml",
        "generation.yaml",
        "guardrails.yaml",
        "limits.yaml",
        "lists/secrets.txt",
    )


def test_version_is_sha256_of_files_and_changes_with_content(bundle_dir: Path) -> None:
    first = load_bundle(bundle_dir).version
    assert len(first) == 64
    assert int(first, 16) >= 0
    assert load_bundle(bundle_dir).version == first  # deterministic
    (bundle_dir / "lists" / "secrets.txt").write_text("sesame\nopen-sesame\nnew\n", encoding="utf-8")
    second = load_bundle(bundle_dir).version
    assert second != first
    # renaming content between files changes the version too (paths are hashed)
    assert bundle_version({"a": b"xy"}) != bundle_version({"a": b"x", "b": b"y"})
    assert (
        bundle_version({"a": b"1"})
        == hashlib.sha256((1).to_bytes(8, "big") + b"a" + (1).to_bytes(8, "big") + b"1").hexdigest()
    )


def test_golden_cases_hidden_and_unrelated_files_do_not_change_version(bundle_dir: Path) -> None:
    before = load_bundle(bundle_dir).version
    (bundle_dir / "tests").mkdir()
    (bundle_dir / "tests" / "cases.yaml").write_text("[]\n", encoding="utf-8")
    (bundle_dir / ".guardrails.yaml.swp").write_bytes(b"\x00garbage")
    (bundle_dir / "README.md").write_text("notes\n", encoding="utf-8")
    (bundle_dir / "lists" / ".#secrets.txt").write_text("x", encoding="utf-8")
    assert load_bundle(bundle_dir).version == before


def test_word_list_comments_blanks_bom_and_duplicates(tmp_path: Path) -> None:
    files = {**VALID_BUNDLE, "lists/secrets.txt": "\ufeff# header\n  sesame  \r\n\n#x\nsesame\n多 词\n"}
    root = write_bundle(tmp_path / "b", files)
    assert load_bundle(root).bundle.word_lists["secrets"] == ("sesame", "多 词")


def test_empty_section_file_means_defaults(tmp_path: Path) -> None:
    root = write_bundle(tmp_path / "b", {**VALID_BUNDLE, "audit.yaml": "# nothing set\n"})
    assert load_bundle(root).bundle.audit.on_failure == "continue"


def test_default_bundle_is_valid() -> None:
    loaded = load_bundle(REPO / "policies" / "default")
    clients = loaded.bundle.clients
    assert clients.clients["demo-app"].tier in loaded.bundle.limits.tiers
    assert {"standard", "batch", "admin"} <= set(loaded.bundle.limits.tiers)


def test_line_index_skips_pydantic_union_tags() -> None:
    parsed = parse_yaml("rules:\n  - id: x\n    kind: pattern\n    pattern: a\n", "g.yaml")
    assert not isinstance(parsed, list)
    assert parsed.index.line_of(("rules", 0, "pattern", "pattern")) == 4
    assert parsed.index.line_of(("rules", 0, "missing_field")) == 2
    assert parsed.index.line_of(()) == 1
