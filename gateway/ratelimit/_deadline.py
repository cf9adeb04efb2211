"""Time budgets for Redis commands that a busy event loop does not use up.

A plain ``asyncio.timeout`` counts wall time. In a burst the loop runs hundreds of other callbacks
between two looks at a socket, so a command to a healthy Redis can "time out" although its reply sat
in the kernel buffer all along: the time went to our own loop, not to Redis. `LoopDeadline` gives a
command up only when both hold:

- it has used its budget of loop time: the loop's lag while commands are in flight (how late a short
  timer fires) is not counted;
- Redis has answered no other command since this one started: while replies keep coming, Redis is
  alive and the wait is our own queue.

A hard ceiling (budget plus allowance) still bounds every call, so a dead Redis behind a busy loop, or a
Redis that answers but far too slowly, is still given up on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

# How often the lag is sampled while commands are in flight. Fine enough to see one slow loop turn,
# coarse enough to cost nothing measurable (one timer per interval, only while Redis is being waited for).
SAMPLE_INTERVAL_S = 0.005


class LoopDeadline:
    """One per limiter (one event loop); `run` bounds one command."""

    def __init__(self, allowance_s: float, interval_s: float = SAMPLE_INTERVAL_S) -> None:
        self._allowance = allowance_s
        self._interval = interval_s
        self._lag = 0.0  # lateness of the sampler's timers so far, seconds
        self._due = 0.0  # when the sampler should wake next (loop time)
        self._in_flight = 0
        self._answered = 0  # commands that got a reply, ever: a sign of life for the others
        self._sampler: asyncio.Task[None] | None = None

    def lag(self, now: float) -> float:
        """Seconds the loop has been late so far, including a sample that is due but not yet run
        (the loop is busy right now)."""
        pending = now - self._due if self._sampler is not None and now > self._due else 0.0
        return self._lag + pending

    async def run(self, call: Coroutine[Any, Any, T], budget_s: float) -> T:
        """Await ``call`` for at most ``budget_s`` of time the loop was free, and at most
        ``budget_s + allowance`` of wall time. Raises TimeoutError (an OSError) and cancels the call."""
        loop = asyncio.get_running_loop()
        task = loop.create_task(call)
        start = loop.time()
        lag_at_start = self.lag(start)
        answered_at_start = self._answered
        ceiling = start + budget_s + self._allowance
        self._enter(loop)
        try:
            wait = budget_s
            while True:
                done, _ = await asyncio.wait((task,), timeout=wait)
                if done:
                    result = task.result()
                    self._answered += 1
                    return result
                now = loop.time()
                spent = now - start - (self.lag(now) - lag_at_start)  # time Redis had to answer
                alive = self._answered != answered_at_start
                if (spent >= budget_s and not alive) or now >= ceiling:
                    break
                # past the budget only because Redis is alive: look again soon, it may have died since
                wait = min(max(budget_s - spent, budget_s / 4), ceiling - now)
                answered_at_start = self._answered
        except BaseException:
            _abandon(task)
            raise
        finally:
            self._in_flight -= 1
        _abandon(task)
        raise TimeoutError(f"no reply within {budget_s * 1000:.0f} ms of loop time")

    def _enter(self, loop: asyncio.AbstractEventLoop) -> None:
        self._in_flight += 1
        if self._sampler is None and self._allowance > 0:
            self._due = loop.time() + self._interval
            self._sampler = loop.create_task(self._sample())

    async def _sample(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._in_flight > 0:
                # _due is only moved on once its lateness is counted (a first step that runs late has
                # already missed the due time _enter set)
                await asyncio.sleep(max(0.0, self._due - loop.time()))
                now = loop.time()
                self._lag += max(0.0, now - self._due)
                self._due = now + self._interval
        finally:
            self._sampler = None

    async def aclose(self) -> None:
        sampler = self._sampler
        if sampler is not None:
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)


def _abandon(task: asyncio.Task[Any]) -> None:
    """Cancel a command we stopped waiting for; its outcome is read so it is never reported as lost."""
    task.cancel()
    task.add_done_callback(_retrieve)


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()
