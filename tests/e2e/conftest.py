"""The real vLLM CPU engines, each started once per test session through its supervisor.

The supervisor runs on its own event loop in a background thread, so it keeps pumping the engine's
output and restarting it between tests whatever loop (or none) a test uses. Its state properties
(``up``, ``pid``, ``restarts``, ``base_url``, ``api_key``) are plain reads and safe from any thread;
coroutines such as ``wait_ready`` go through ``engine_runner.run(...)``.

Skipped when vLLM is not installed. ``GATEWAY_DATA_DIR`` (default ``~/.cache/menshen``) holds the
demo models, prepared on first use. The chat and the embeddings engine each start only for the tests
that ask for them.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import pytest

from engine import EngineSupervisor, Role, SupervisorConfig
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


def _supervised(runner: LoopThread, role: Role) -> Iterator[EngineSupervisor]:
    """Start the ``cpu-demo`` engine with ``role`` on ``runner``, yield it ready, stop it after."""
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vLLM is not installed (make install-cpu)")
    supervisor = EngineSupervisor(
        SupervisorConfig(
            profile="cpu-demo",
            role=role,
            startup_timeout_s=ENGINE_START_TIMEOUT_S,
            backoff_min_s=0.5,
            backoff_max_s=5.0,
        )
    )
    runner.run(supervisor.start(), timeout=ENGINE_START_TIMEOUT_S)
    try:
        runner.run(supervisor.wait_ready(ENGINE_START_TIMEOUT_S))
        yield supervisor
    finally:
        runner.run(supervisor.stop(), timeout=120)


@pytest.fixture(scope="session")
def engine_supervisor(engine_runner: LoopThread) -> Iterator[EngineSupervisor]:
    """The started and ready ``cpu-demo`` chat engine supervisor, shared by the whole session."""
    yield from _supervised(engine_runner, "chat")


@pytest.fixture(scope="session")
def embeddings_supervisor(engine_runner: LoopThread) -> Iterator[EngineSupervisor]:
    """The started and ready ``cpu-demo`` embeddings engine (all-MiniLM-L6-v2), shared by the session."""
    yield from _supervised(engine_runner, "embeddings")
