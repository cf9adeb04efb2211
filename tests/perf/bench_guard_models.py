"""Guard model benchmark: gateway CPU per streamed chunk that the watch and hold checks add, the cost of a
checkpoint, and of a cached input verdict. The guard itself is an in-process stub answering Safe at once,
so what is measured is the gateway's side, not a model.

Run: PYTHONPATH=. .venv/bin/python tests/perf/bench_guard_models.py
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from gateway.guardrails.guard_http import GuardAnswer, GuardInput
from gateway.guardrails.guard_watch import guard_watch
from gateway.guardrails.guards import Guard, GuardSet
from gateway.policy.sections import ClassifierRule, PolicyBundle

CHUNK = " word"  # one token of English prose
ANSWER_CHUNKS = 800  # a 4,000-character answer
STREAMS = 25
ROUNDS = 7


class SafeStub:
    """A guard that answers Safe without I/O."""

    async def call(self, item: GuardInput) -> GuardAnswer:
        return GuardAnswer("allow", "safe")

    async def aclose(self) -> None:
        return None


def guard_set(mode: str, checkpoint: int, cache_size: int = 0) -> GuardSet:
    data: dict[str, Any] = {
        "id": "g",
        "kind": "classifier",
        "engine": {"url": "http://127.0.0.1:9/v1"},
        "model": "m",
        "where": ["output"],
        "stream_mode": mode,
        "checkpoint_chars": checkpoint,
        "cache_size": cache_size,
    }
    rule = ClassifierRule.model_validate(data)
    return GuardSet((Guard(rule, SafeStub()),), PolicyBundle())


async def stream_ns_per_chunk(mode: str, checkpoint: int) -> float:
    """STREAMS answers, each fed chunk by chunk with a loop turn after each chunk (as the relay does between
    reads), then settled and finished: the guard's calls at every checkpoint included."""
    guards = guard_set(mode, checkpoint)
    start = time.perf_counter_ns()
    for _ in range(STREAMS):
        watch = guard_watch(guards, None, "the prompt")
        assert watch is not None
        for _ in range(ANSWER_CHUNKS):
            watch.feed("content", CHUNK)
            await asyncio.sleep(0)
        await watch.settle()
        watch.finish("content")
    return (time.perf_counter_ns() - start) / (STREAMS * ANSWER_CHUNKS)


async def baseline_ns_per_chunk() -> float:
    start = time.perf_counter_ns()
    for _ in range(STREAMS * ANSWER_CHUNKS):
        await asyncio.sleep(0)
    return (time.perf_counter_ns() - start) / (STREAMS * ANSWER_CHUNKS)


async def cached_judge_us() -> float:
    (guard,) = guard_set("watch", 400, cache_size=16).guards
    item = GuardInput("a prompt of some length " * 40, "input", "c1")
    await guard.judge(item, "enforce")
    n = 20_000
    start = time.perf_counter_ns()
    for _ in range(n):
        await guard.judge(item, "enforce")
    return (time.perf_counter_ns() - start) / n / 1000


async def main() -> None:
    base = statistics.median([await baseline_ns_per_chunk() for _ in range(ROUNDS)])
    print(f"loop turn per chunk (baseline, subtracted below): {base:,.0f} ns")
    for mode in ("watch", "hold"):
        for checkpoint in (400, 100):
            ns = statistics.median([await stream_ns_per_chunk(mode, checkpoint) for _ in range(ROUNDS)])
            print(
                f"{mode:5} checkpoint_chars={checkpoint:3}: {ns - base:,.0f} ns per chunk added "
                f"({len(CHUNK)} chars a chunk, a checkpoint every {checkpoint // len(CHUNK)} chunks)"
            )
    print(f"cached input verdict (960-char prompt, hash and LRU): {await cached_judge_us():.1f} us")


if __name__ == "__main__":
    asyncio.run(main())
