"""Runs a supervisor over the fake engine in its own process (not a test module).

Usage, from the repository root: ``python -m tests.unit.engine.run_supervisor STATE_DIR MODE``.
Prints ``READY <engine pid>`` once the engine is up, then:
  hold        wait forever (the test kills this process)
  exit        return without stop(): the atexit hook must stop the engine
  signals     install the signal handlers and wait for SIGTERM/SIGINT, then exit 0
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from engine import EngineSupervisor, SupervisorConfig
from tests.support.processes import FAKE_ENGINE


async def main(state_dir: Path, mode: str) -> None:
    cfg = SupervisorConfig(
        overrides={"model": str(state_dir / "model")},
        extra_env={"FAKE_STATE_DIR": str(state_dir)},
        command_prefix=(sys.executable, str(FAKE_ENGINE)),
        stop_grace_s=3.0,
    )
    sup = EngineSupervisor(cfg)
    await sup.start()
    await sup.wait_ready(10)
    done = asyncio.Event()
    if mode == "signals":
        sup.install_signal_handlers(lambda _sig: done.set())
    print(f"READY {sup.pid}", flush=True)
    if mode == "exit":
        return
    await done.wait()
    await sup.stop()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2]))
