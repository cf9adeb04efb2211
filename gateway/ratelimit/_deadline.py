"""Time budgets for Redis commands that a busy event loop does not use up.

A plain ``asyncio.timeout`` counts wall time. In a burst the loop runs hundreds of other callbacks
between two looks at a socket, so a command to a healthy Redis can "time out" although its reply sat
in the kernel buffer all along: the time went to our own loop, not to Redis. `LoopDeadline` gives a
command up only when both hold:

- it has used its budget of loop time: the loop's lag while commands are in flight (how late a short
  timer fires) is not counted;
- Redis has answered no other command since this one started: while replies keep coming, Redis is
  alive and the wait is our own queue;
- a PING on a connection of its own (one at a time, shared by every late command) gets no answer
  within the budget either: a burst can hold every command in connection set-up at once, and then
  only a direct question tells a busy loop from a dead Redis.

A hard ceiling (budget plus allowance) still bounds every call, so a dead Redis behind a busy loop, or a
Redis that answers but far too slowly, is still given up on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

# How often the lag is sampled while commands are in flight. Each busy loop turn is charged up to one
# interval, so it is kept short; the timer only runs while Redis is being waited for.
SAMPLE_INTERVAL_S = 0.001


class LoopDeadline:
    """One per limiter (one event loop); `run` bounds one command."""

    def __init__(
        self,
        allowance_s: float,
        probe: Callable[[], Coroutine[Any, Any, object]] | None = None,
        interval_s: float = SAMPLE_INTERVAL_S,
    ) -> None:
        self._allowance = allowance_s
        self._probe = probe
        self._probing: asyncio.Task[bool] | None = None
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
        return await self._run(call, budget_s, may_probe=True)

    async def _run(self, call: Coroutine[Any, Any, T], budget_s: float, *, may_probe: bool) -> T:
        loop = asyncio.get_running_loop()
        task = loop.create_task(call)
        start = loop.time()
        lag_at_start = self.lag(start)
        answered_at_start = self._answered
        ceiling = start + budget_s + self._allowance
        self._enter(loop)
        probe_call = self._probe if may_probe else None
        try:
            # with a probe, look halfway: a PING started then has its answer by the time the budget is up
            wait = budget_s / 2 if probe_call is not None else budget_s
            while True:
                done, _ = await asyncio.wait((task,), timeout=wait)
                if done:
                    result = task.result()
                    self._answered += 1
                    return result
                now = loop.time()
                spent = now - start - (self.lag(now) - lag_at_start)  # time Redis had to answer
                alive = self._answered != answered_at_start
                if probe_call is not None and not alive:
                    probe = self._probe_task(probe_call, budget_s)
                    if spent >= budget_s and now < ceiling:
                        alive = await asyncio.shield(probe)
                        now = loop.time()
                if (spent >= budget_s and not alive) or now >= ceiling:
                    break
                # Past the budget only because Redis is alive: look again a budget later (not sooner: a
                # burst has hundreds of commands waiting, and each look costs a wake-up).
                wait = min(budget_s - spent if spent < budget_s else budget_s, ceiling - now)
                answered_at_start = self._answered
        except BaseException:
            _abandon(task)
            raise
        finally:
            self._in_flight -= 1
        _abandon(task)
        raise TimeoutError(f"no reply within {budget_s * 1000:.0f} ms of loop time")

    def _probe_task(
        self, probe: Callable[[], Coroutine[Any, Any, object]], budget_s: float
    ) -> asyncio.Task[bool]:
        """The PING under way, or a new one: one at a time, every late command shares its answer."""
        if self._probing is None or self._probing.done():
            self._probing = asyncio.get_running_loop().create_task(self._ping(probe, budget_s))
        return self._probing

    async def _ping(self, probe: Callable[[], Coroutine[Any, Any, object]], budget_s: float) -> bool:
        try:
            await self._run(probe(), budget_s, may_probe=False)
        except Exception:  # noqa: BLE001 - any failure of the probe means "no sign of life"
            return False
        return True

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
        for task in (self._sampler, self._probing):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)


def _abandon(task: asyncio.Task[Any]) -> None:
    """Cancel a command we stopped waiting for; its outcome is read so it is never reported as lost."""
    task.cancel()
    task.add_done_callback(_retrieve)


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()
