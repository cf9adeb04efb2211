"""Shared test helpers (moved out of tests/e2e/conftest.py)."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

import httpx

from engine import EngineSupervisor

T = TypeVar("T")


ENGINE_START_TIMEOUT_S = 900.0


class LoopThread:
    """An asyncio loop in a daemon thread; ``run`` executes a coroutine there and returns its result."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="engine-supervisor-loop", daemon=True
        )
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    def close(self) -> None:
        self.run(self._cancel_leftovers(), timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    @staticmethod
    async def _cancel_leftovers() -> None:
        current = asyncio.current_task()
        leftovers = [task for task in asyncio.all_tasks() if task is not current]
        for task in leftovers:
            task.cancel()
        await asyncio.gather(*leftovers, return_exceptions=True)


RUNNING = re.compile(r"^vllm:num_requests_running\{[^}]*\}\s+(\S+)$", re.MULTILINE)


def engine_client(sup: EngineSupervisor, *, key: str | None = "internal") -> httpx.Client:
    """An HTTP client straight to the engine: with its internal key, another key, or none."""
    headers = {"Authorization": f"Bearer {sup.api_key if key == 'internal' else key}"} if key else {}
    return httpx.Client(base_url=sup.base_url, headers=headers, timeout=120, trust_env=False)


def requests_running(sup: EngineSupervisor) -> float:
    """vLLM's own count of running requests, from its /metrics."""
    with engine_client(sup, key=None) as client:
        text = client.get("/metrics").text
    values = RUNNING.findall(text)
    assert values, "vllm:num_requests_running missing from /metrics"
    return sum(float(v) for v in values)
