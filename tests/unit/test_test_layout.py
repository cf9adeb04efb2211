"""The tests' own layout rule: shared helpers come from tests/support/ (or the fake engine in tests/fakes/),
never from a conftest module, a test module or a relative import."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
FILES = sorted(p for p in TESTS.rglob("*.py") if "loop_corpus" not in p.parts)


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(TESTS)))
def test_imports_of_test_code_come_from_support(path: Path) -> None:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.ImportFrom):
            continue
        module = node.module or ""
        if path.name == "test_no_private_imports.py":
            continue  # it parses sample sources that show what it refuses
        assert node.level == 0, f"{path}: relative import"
        if module.startswith("tests."):
            last = module.rsplit(".", 1)[-1]
            assert last != "conftest" and not last.startswith("test_"), f"{path}: imports {module}"
            # shared helpers, the fake engine, and the benchmark, fuzz and load tools' own helper modules
            allowed = ("tests.support", "tests.fakes", "tests.perf", "tests.fuzz", "tests.load")
            assert module.startswith(allowed), f"{path}: imports {module}"
