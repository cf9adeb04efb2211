"""Helpers shared by the engine tests (the fake engine's records, process checks, polling)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine import SupervisorConfig

# The stand-in for a vLLM server process (`gateway up` with MENSHEN_ENGINE_COMMAND, supervisor tests).
FAKE_ENGINE = Path(__file__).resolve().parents[1] / "fakes" / "process.py"


def read_runs(state_dir: Path) -> list[dict[str, Any]]:
    """The fake engine's record of each start, oldest first."""
    runs_file = state_dir / "runs.jsonl"
    if not runs_file.exists():
        return []
    return [json.loads(line) for line in runs_file.read_text().splitlines()]


def pid_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def wait_until(condition: Callable[[], bool], within: float, step: float = 0.02) -> bool:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(step)
    return True


def wait_until_sync(condition: Callable[[], bool], within: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
    return True


def kill_quietly(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


MakeConfig = Callable[..., SupervisorConfig]


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout_s``; always reaped."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
