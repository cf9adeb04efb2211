"""The real vLLM CPU engine, started once per test session through the supervisor.

The supervisor runs on its own event loop in a background thread, so it keeps pumping the engine's
output and restarting it between tests whatever loop (or none) a test uses. Its state properties
(``up``, ``pid``, ``restarts``, ``base_url``, ``api_key``) are plain reads and safe from any thread;
coroutines such as ``wait_ready`` go through ``engine_runner.run(...)``.

Skipped when vLLM is not installed. ``GATEWAY_DATA_DIR`` (default ``~/.cache/menshen``) holds the
demo model, prepared on first use.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import pytest

from engine import EngineSupervisor, SupervisorConfig
from tests.support.e2e import ENGINE_START_TIMEOUT_S, LoopThread

# Start-up takes 35-60 s on an idle 2-core machine and several minutes on a busy one.


@pytest.fixture(scope="session")
def engine_runner() -> Iterator[LoopThread]:
    """The loop the session's engine supervisor lives on."""
    runner = LoopThread()
    try:
        yield runner
    finally:
        runner.close()


@pytest.fixture(scope="session")
def engine_supervisor(engine_runner: LoopThread) -> Iterator[EngineSupervisor]:
    """The started and ready ``cpu-demo`` engine supervisor, shared by the whole session."""
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vLLM is not installed (make install-cpu)")
    supervisor = EngineSupervisor(
        SupervisorConfig(
            profile="cpu-demo",
            startup_timeout_s=ENGINE_START_TIMEOUT_S,
            backoff_min_s=0.5,
            backoff_max_s=5.0,
        )
    )
    engine_runner.run(supervisor.start(), timeout=ENGINE_START_TIMEOUT_S)
    try:
        engine_runner.run(supervisor.wait_ready(ENGINE_START_TIMEOUT_S))
        yield supervisor
    finally:
        engine_runner.run(supervisor.stop(), timeout=120)
