"""``policy check`` and ``policy test``: exit codes, error listing, verdict JSON, golden cases."""

from __future__ import annotations

import argparse
import importlib
import io
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.policy import PolicyBundle
from gateway.policy.commands import check, register, run_golden, scan_text
from tests.support.policy import WordScanner

REPO = Path(__file__).resolve().parents[3]
Compiler = Callable[[PolicyBundle], WordScanner]


def real_guardrails_available() -> bool:
    try:
        return hasattr(importlib.import_module("gateway.guardrails"), "compile_guardrails")
    except ImportError:
        return False


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.policy.commands", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )


def test_check_valid_bundle_prints_one_line_summary(bundle_dir: Path, compiler: Compiler) -> None:
    out = io.StringIO()
    assert check(bundle_dir, out=out, compiler=compiler) == 0
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    # 3 rules; words: sesame, open-sesame, forbidden-word, 禁词; 1 client; 2 tiers
    assert lines[0].startswith("policy OK: version ")
    assert lines[0].endswith(", 3 rules, 4 words, 1 clients, 2 tiers")


def test_check_cli_lists_every_error_and_exits_1(bundle_dir: Path) -> None:
    (bundle_dir / "limits.yaml").write_text(
        "tiers:\n  standard:\n    requests: 1/eon\n    x: 1\n", encoding="utf-8"
    )
    (bundle_dir / "lists" / "secrets.txt").write_text("ok\n\x00\n", encoding="utf-8")
    result = run_cli("policy", "check", str(bundle_dir))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert "limits.yaml:3: tiers.standard.requests" in lines[0]
    assert lines[1] == "limits.yaml:4: tiers.standard.x: unknown key"
    assert lines[2] == "lists/secrets.txt:2: word contains a NUL character"
    assert lines[3] == f"3 errors in {bundle_dir}"


def test_check_reports_broken_golden_case_file(bundle_dir: Path, compiler: Compiler) -> None:
    (bundle_dir / "tests").mkdir()
    (bundle_dir / "tests" / "a.yaml").write_text(
        "- name: x\n  text: y\n  expect: {action: maybe}\n", encoding="utf-8"
    )
    out = io.StringIO()
    assert check(bundle_dir, out=out, compiler=compiler) == 1
    assert out.getvalue().startswith("tests/a.yaml:3: ")


def test_scan_text_prints_verdict_json(bundle_dir: Path, compiler: Compiler) -> None:
    out = io.StringIO()
    assert scan_text(bundle_dir, "say sesame", where="output", compact=True, out=out, compiler=compiler) == 0
    verdict = json.loads(out.getvalue())
    assert verdict == {
        "action": "mask",
        "hits": [
            {
                "rule": "demo.secret",
                "category": "secrets",
                "action": "mask",
                "start": 4,
                "end": 10,
                "mode": "enforce",
            }
        ],
        "text": "say ******",
    }


def test_scan_text_applies_client_overrides_and_rejects_unknown_client(
    bundle_dir: Path, compiler: Compiler
) -> None:
    out = io.StringIO()
    assert scan_text(bundle_dir, "sesame", client="demo-app", out=out, compiler=compiler) == 0
    verdict = json.loads(out.getvalue())
    assert verdict["action"] == "allow"
    assert verdict["hits"][0]["mode"] == "shadow"
    out = io.StringIO()
    assert scan_text(bundle_dir, "sesame", client="nobody", out=out, compiler=compiler) == 1
    assert "unknown client" in out.getvalue()


GOLDEN = """\
- name: clean
  text: hello
  expect: {action: allow, rules: []}
- name: banned word blocks
  text: a forbidden-word b
  expect: {action: block, rules: [demo.banned]}
- name: wrong expectation
  text: sesame
  where: output
  expect: {action: block, rules: [demo.banned], text: "xx"}
"""


def test_golden_cases_report_each_mismatch(bundle_dir: Path, compiler: Compiler) -> None:
    (bundle_dir / "tests").mkdir()
    (bundle_dir / "tests" / "cases.yaml").write_text(GOLDEN, encoding="utf-8")
    out = io.StringIO()
    assert run_golden(bundle_dir, out=out, compiler=compiler) == 1
    lines = out.getvalue().splitlines()
    assert lines[0] == (
        "FAIL tests/cases.yaml:7: 'wrong expectation': expected action block, got mask; "
        "expected rules ['demo.banned'], got ['demo.secret']; masked text differs from expect.text"
    )
    assert lines[1].startswith("2/3 golden cases passed")

    (bundle_dir / "tests" / "cases.yaml").write_text(
        GOLDEN[: GOLDEN.index("- name: wrong")], encoding="utf-8"
    )
    out = io.StringIO()
    assert run_golden(bundle_dir, compact=True, out=out, compiler=compiler) == 0
    assert json.loads(out.getvalue())["failed"] == []


def test_register_wires_subcommands() -> None:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["policy", "test", "d", "--text", "t", "--where", "reasoning", "--client", "c"])
    assert (args.text, args.where, args.client, args.json) == ("t", "reasoning", "c", False)
    assert callable(args.func)
    with pytest.raises(SystemExit):
        parser.parse_args(["policy", "test", "d", "--where", "elsewhere"])


@pytest.mark.skipif(
    not real_guardrails_available(), reason="gateway.guardrails.compile_guardrails not written yet"
)
def test_default_bundle_checks_and_its_golden_cases_pass() -> None:
    check_result = run_cli("policy", "check", "policies/default")
    assert check_result.returncode == 0, check_result.stdout
    assert check_result.stdout.startswith("policy OK: version ")
    golden = run_cli("policy", "test", "policies/default")
    assert golden.returncode == 0, golden.stdout
