"""A slow loop is not a dead Redis: time our own event loop spends busy is not charged to Redis,
while a Redis that never answers is still given up on, busy loop or not."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from gateway.policy.sections import TierLimits
from gateway.ratelimit import Admission, LimiterUnavailable, RateLimitConfig, RateLimited, RateLimiter
from gateway.ratelimit._deadline import LoopDeadline
from tests.support.redis import REDIS_URL, RedisProxy, purge, unique_prefix

LIMITS = TierLimits(requests="50/minute", concurrency=1000)


def block_loop(seconds: float) -> None:
    """Hold the event loop as a burst of CPU-bound request handling does (JSON, auth, guards)."""
    time.sleep(seconds)


async def keep_busy_until(done: asyncio.Future[object]) -> None:
    """A loop that stays busy (20 ms of CPU per turn) for as long as ``done`` is pending."""
    while not done.done():
        block_loop(0.02)
        await asyncio.sleep(0)


async def reply_after(seconds: float, value: str) -> str:
    await asyncio.sleep(seconds)
    return value


async def test_a_reply_read_late_because_the_loop_was_busy_is_not_a_timeout() -> None:
    deadline = LoopDeadline(allowance_s=2.0)
    call = asyncio.ensure_future(deadline.run(reply_after(0.01, "ok"), budget_s=0.05))
    await asyncio.sleep(0)  # the call is under way
    block_loop(0.3)  # six budgets pass on the wall clock, none of them free for the reply
    assert await call == "ok"


async def test_a_call_that_never_answers_times_out_even_behind_a_busy_loop() -> None:
    deadline = LoopDeadline(allowance_s=0.3)
    never = asyncio.Event()
    call: asyncio.Future[object] = asyncio.ensure_future(deadline.run(never.wait(), budget_s=0.05))
    hog = asyncio.ensure_future(keep_busy_until(call))
    with pytest.raises(TimeoutError):
        await call
    await hog


async def test_without_an_allowance_the_budget_is_wall_time() -> None:
    deadline = LoopDeadline(allowance_s=0.0)
    call = asyncio.ensure_future(deadline.run(reply_after(0.01, "ok"), budget_s=0.05))
    await asyncio.sleep(0)
    block_loop(0.2)
    with pytest.raises(TimeoutError):
        await call


async def test_a_late_reply_is_waited_for_while_redis_answers_a_ping() -> None:
    """A burst can hold every command in connection set-up at once: no reply yet, but a PING on a warm
    connection of its own shows Redis is alive, so the late command is not given up on."""
    deadline = LoopDeadline(allowance_s=2.0, probe=lambda: reply_after(0.0, "PONG"))
    assert await deadline.run(reply_after(0.2, "late"), budget_s=0.05) == "late"


async def test_a_late_reply_times_out_when_the_ping_is_not_answered_either() -> None:
    deadline = LoopDeadline(allowance_s=2.0, probe=asyncio.Event().wait)
    with pytest.raises(TimeoutError):
        await deadline.run(asyncio.Event().wait(), budget_s=0.05)
    await deadline.aclose()


async def test_a_cancelled_caller_cancels_the_call() -> None:
    deadline = LoopDeadline(allowance_s=1.0)
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def command() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    caller = asyncio.ensure_future(deadline.run(command(), budget_s=5.0))
    await started.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await asyncio.wait_for(cancelled.wait(), 5)
    await deadline.aclose()


# --- through the limiter, on real Redis ---------------------------------------------------------------


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    value = unique_prefix()
    yield value
    await purge(value)


@pytest.mark.redis
async def test_a_burst_on_a_busy_loop_gets_only_admissions_and_429s(prefix: str) -> None:
    """The red-team burst in one process: 300 admissions at once with the production timeout (50 ms),
    each request doing a little CPU work first, and the loop stalled twice more by a bigger job. A
    healthy Redis must never be reported down: 50 admitted, 250 refused with 429, no 503."""
    limiter = RateLimiter(RateLimitConfig(redis_url=REDIS_URL, key_prefix=prefix, command_timeout_ms=50))
    try:
        assert await limiter.warm_up()

        async def request() -> object:
            block_loop(0.001)  # parsing, auth, guards
            try:
                return await limiter.admit("alice", LIMITS, 0, "fail_closed")
            except (RateLimited, LimiterUnavailable) as exc:
                return exc

        async def hog() -> None:
            for _ in range(2):
                await asyncio.sleep(0.01)
                block_loop(0.15)

        results = await asyncio.gather(*(request() for _ in range(300)), hog())
        outcomes = results[:300]
        assert sum(isinstance(r, Admission) for r in outcomes) == 50
        assert sum(isinstance(r, RateLimited) for r in outcomes) == 250
        assert limiter.status().storage_errors == 0
        assert not limiter.degraded
        for admission in outcomes:
            if isinstance(admission, Admission):
                await admission.settle(0)
    finally:
        await limiter.aclose()


@pytest.mark.redis
async def test_a_hung_redis_behind_a_busy_loop_is_still_reported(prefix: str) -> None:
    proxy = await RedisProxy().start()
    limiter = RateLimiter(
        RateLimitConfig(
            redis_url=proxy.url, key_prefix=prefix, command_timeout_ms=50, loop_lag_allowance_ms=300
        )
    )
    try:
        assert await limiter.warm_up()
        proxy.blackhole = True
        admit: asyncio.Future[object] = asyncio.ensure_future(
            limiter.admit("alice", LIMITS, 0, "fail_closed")
        )
        hog = asyncio.ensure_future(keep_busy_until(admit))
        with pytest.raises(LimiterUnavailable):
            await admit
        await hog
        assert limiter.degraded
    finally:
        await limiter.aclose()
        await proxy.close()
