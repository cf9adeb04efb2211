"""Fixtures for the engine unit tests: a supervisor configuration that runs the fake engine."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from engine import SupervisorConfig
from tests.support.processes import FAKE_ENGINE, MakeConfig


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    path.mkdir()
    return path


@pytest.fixture
def make_config(tmp_path: Path, state_dir: Path) -> MakeConfig:
    """Build a fast-cycling config running the fake engine; ``env`` drives its behaviour."""

    def make(env: dict[str, str] | None = None, **fields: Any) -> SupervisorConfig:
        values: dict[str, Any] = {
            "profile": "cpu-demo",
            "overrides": {"model": str(tmp_path / "model")},
            "data_dir": tmp_path / "data",
            "startup_timeout_s": 10.0,
            "backoff_min_s": 0.05,
            "backoff_max_s": 0.2,
            "health_interval_s": 0.1,
            "progress_interval_s": 0.2,
            "stop_grace_s": 3.0,
            "extra_env": {"FAKE_STATE_DIR": str(state_dir), **(env or {})},
            "command_prefix": (sys.executable, str(FAKE_ENGINE)),
        }
        values.update(fields)
        return SupervisorConfig(**values)

    return make
