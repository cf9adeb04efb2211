"""Fixtures: a small valid bundle on disk and a word scanner standing in for compiled guardrails."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.policy.sections import PolicyBundle
from tests.support.policy import VALID_BUNDLE, WordScanner, write_bundle


@pytest.fixture
def bundle_dir(tmp_path: Path) -> Path:
    return write_bundle(tmp_path / "bundle", VALID_BUNDLE)


@pytest.fixture
def compiler() -> Callable[[PolicyBundle], WordScanner]:
    return WordScanner
