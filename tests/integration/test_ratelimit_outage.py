"""Redis outages: refused connections, a Redis that accepts but never answers, and one whose answer
comes after the command timeout.

fail_closed raises LimiterUnavailable (503); fail_open falls back to per-replica limits and reports
degraded. Nothing else escapes, and no call waits much longer than the command timeout. An admission
that ran in Redis although its answer came too late is undone in the background.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from gateway.policy.sections import TierLimits
from gateway.ratelimit import (
    Admission,
    LimiterUnavailable,
    OnRedisError,
    RateLimitConfig,
    RateLimited,
    RateLimiter,
)
from tests.support.ports import free_port
from tests.support.redis import (
    REDIS_URL,
    RedisProxy,
    redis_keys,
    redis_state,
)

pytestmark = pytest.mark.redis

LIMITS = TierLimits(requests="3/minute", concurrency=5)


@pytest.fixture
async def proxy() -> AsyncIterator[RedisProxy]:
    p = await RedisProxy().start()
    yield p
    await p.close()


def limiter_at(url: str, prefix: str, **config: float) -> RateLimiter:
    return RateLimiter(RateLimitConfig(redis_url=url, key_prefix=prefix, **config))


async def timed_admit(limiter: RateLimiter, mode: OnRedisError) -> tuple[float, object]:
    return await timed(limiter.admit("alice", LIMITS, 0, mode))


async def timed(admission: Awaitable[object]) -> tuple[float, object]:
    start = time.perf_counter()
    try:
        result: object = await admission
    except (LimiterUnavailable, RateLimited) as exc:
        result = exc
    return time.perf_counter() - start, result


async def test_refused_connection_fail_closed(prefix: str) -> None:
    limiter = limiter_at(f"redis://127.0.0.1:{free_port()}/15", prefix)
    try:
        assert await limiter.warm_up(0.2) is False
        assert await limiter.ping() is False
        elapsed, result = await timed_admit(limiter, "fail_closed")
        assert isinstance(result, LimiterUnavailable)
        assert limiter.degraded
        assert limiter.fallbacks == 0
        assert elapsed < 0.5
    finally:
        await limiter.aclose()


async def test_refused_connection_fail_open_keeps_local_limits(prefix: str) -> None:
    limiter = limiter_at(f"redis://127.0.0.1:{free_port()}/15", prefix)
    try:
        admitted = [await limiter.admit("alice", LIMITS, 0, "fail_open") for _ in range(3)]
        with pytest.raises(RateLimited):
            await limiter.admit("alice", LIMITS, 0, "fail_open")
        status = limiter.status()
        assert status.degraded
        assert status.fallbacks == 4
        assert status.storage_errors >= 1
        assert admitted[0].headers["x-ratelimit-remaining-requests"] == "2"
        for admission in admitted:
            await admission.settle(0)
        assert limiter.status().leases_held == 0
    finally:
        await limiter.aclose()


@pytest.mark.parametrize("mode", ["fail_closed", "fail_open"])
async def test_hung_redis_is_bounded_by_the_command_timeout(
    prefix: str, proxy: RedisProxy, mode: OnRedisError
) -> None:
    limiter = limiter_at(proxy.url, prefix, command_timeout_ms=50)
    try:
        assert await limiter.warm_up()
        proxy.blackhole = True
        elapsed, result = await timed_admit(limiter, mode)
        assert elapsed < 0.5  # 50 ms budget plus a loaded 2-core box
        if mode == "fail_closed":
            assert isinstance(result, LimiterUnavailable)
        else:
            assert not isinstance(result, BaseException)
            assert limiter.fallbacks == 1
        assert limiter.degraded
    finally:
        await limiter.aclose()


async def test_outage_then_recovery(prefix: str, proxy: RedisProxy) -> None:
    # a roomier timeout than production's 50 ms: the proxy shares this loop on a busy 2-core box
    limiter = limiter_at(proxy.url, prefix, command_timeout_ms=200, probe_interval_s=0.5)
    try:
        assert await limiter.warm_up()
        first = await limiter.admit("alice", LIMITS, 0, "fail_open")
        assert limiter.fallbacks == 0
        proxy.blackhole = True
        await first.settle(0)  # Redis hangs: settle swallows it, the lease would expire by TTL
        assert limiter.status().storage_errors == 1
        # while Redis is known bad, admissions do not wait for it again until the probe interval
        elapsed, result = await timed_admit(limiter, "fail_open")
        assert elapsed < 0.02
        assert limiter.fallbacks == 1
        assert limiter.degraded
        proxy.blackhole = False
        await asyncio.sleep(0.55)
        second = await limiter.admit("alice", LIMITS, 0, "fail_open")
        assert not limiter.degraded
        assert limiter.fallbacks == 1
        # back on the shared counters: the first admission (made on Redis) is still counted there
        assert second.headers["x-ratelimit-remaining-requests"] == "1"
        await second.settle(0)
        assert not isinstance(result, BaseException)
    finally:
        await limiter.aclose()


async def test_lease_of_a_dead_replica_expires(prefix: str) -> None:
    limits = TierLimits(concurrency=1)
    dead = limiter_at(REDIS_URL, prefix, lease_ttl_s=1.0, command_timeout_ms=1000)
    alive = limiter_at(REDIS_URL, prefix, lease_ttl_s=1.0, command_timeout_ms=1000)
    try:
        await dead.admit("alice", limits, 0, "fail_closed")
        await dead.aclose()  # the replica dies holding the slot: no settle, no more heartbeats
        with pytest.raises(RateLimited):
            await alive.admit("alice", limits, 0, "fail_closed")
        await asyncio.sleep(1.2)
        admission = await alive.admit("alice", limits, 0, "fail_closed")
        await admission.settle(0)
    finally:
        await alive.aclose()


# --- an answer that comes too late: the admission ran in Redis, the limiter gave up on it ----------


async def eventually(predicate: Callable[[], bool], within: float = 3.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, f"condition not met within {within} s"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("mode", ["fail_closed", "fail_open"])
async def test_an_admission_answered_too_late_is_undone(
    prefix: str, proxy: RedisProxy, mode: OnRedisError
) -> None:
    limits = TierLimits(requests="3/minute;100/hour", tokens="1000/minute", concurrency=2)
    # 200 ms rather than 50: the proxy shares this loop on a busy 2-core box
    # no allowance: Redis answers the health probe, so a late reply would otherwise be waited for
    limiter = limiter_at(
        proxy.url, prefix, command_timeout_ms=200, probe_interval_s=0.3, loop_lag_allowance_ms=0
    )
    try:
        assert await limiter.warm_up()
        held = await limiter.admit("alice", limits, 200, mode)  # on Redis, still in flight
        before = await redis_state(prefix)

        proxy.delay_next_reply(1.0)  # Redis runs the admission; its answer is held past the timeout
        elapsed, late = await timed(limiter.admit("alice", limits, 300, mode))
        assert elapsed < 0.8  # the command timeout, not the late answer
        if mode == "fail_closed":
            assert isinstance(late, LimiterUnavailable)
        else:
            assert isinstance(late, Admission)  # served by the local limiter
            assert limiter.fallbacks == 1
        assert limiter.degraded

        await eventually(lambda: limiter.status().undone == 1)
        # as if it had never run: counts, tokens and the lease set are back, its marker is gone (a
        # cancel that found no marker would have left a tombstone, so it did run)
        assert await redis_state(prefix) == before
        assert limiter.status().undo_failures == 0

        await asyncio.sleep(0.35)  # the probe interval: back on Redis, which counts alice's two admissions
        again = await limiter.admit("alice", limits, 100, mode)
        assert not limiter.degraded
        assert again.headers["x-ratelimit-remaining-requests"] == "1"
        assert again.headers["x-ratelimit-remaining-tokens"] == str(1000 - 200 - 100)
        for admission in (held, again, late):
            if isinstance(admission, Admission):
                await admission.settle(0)
        assert not [k for k in await redis_keys(prefix) if ":u:" in k or k.endswith(":c")]
    finally:
        await limiter.aclose()


async def test_an_undo_that_cannot_reach_redis_is_counted_and_logged(
    prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    # the shortest lease TTL: attempts go on for half the undo TTL (its 10 s floor), 5 s
    limiter = limiter_at(f"redis://127.0.0.1:{free_port()}/15", prefix, lease_ttl_s=1.0)
    try:
        with caplog.at_level(logging.WARNING, logger="gateway.ratelimit"):
            _, result = await timed(limiter.admit("alice", LIMITS, 0, "fail_closed"))
            assert isinstance(result, LimiterUnavailable)
            # attempts with backoff for half the undo TTL (10 s floor), then it gives up: never raised
            await eventually(lambda: limiter.status().undo_failures == 1, within=8.0)
        assert limiter.status().undone == 0
        assert any("could not undo" in r.getMessage() for r in caplog.records)
    finally:
        await limiter.aclose()


async def test_shutdown_does_not_wait_long_for_undos(prefix: str, proxy: RedisProxy) -> None:
    limiter = limiter_at(proxy.url, prefix, command_timeout_ms=50)
    assert await limiter.warm_up()
    proxy.blackhole = True  # the admission and every attempt to undo it hang
    _, result = await timed(limiter.admit("alice", LIMITS, 0, "fail_closed"))
    assert isinstance(result, LimiterUnavailable)
    started = time.perf_counter()
    await limiter.aclose()
    assert time.perf_counter() - started < 2.0  # one undo attempt's time (1 s), not all of them
    assert limiter.status().undo_failures == 1


# --- a stall: Redis stops serving for longer than every attempt, then runs what was queued -----------


async def admit_all(limiter: RateLimiter, limits: TierLimits, count: int) -> list[object]:
    calls = (timed(limiter.admit("alice", limits, 0, "fail_closed")) for _ in range(count))
    return [result for _, result in await asyncio.gather(*calls)]


async def test_leases_taken_during_a_stall_do_not_outlive_it(prefix: str, proxy: RedisProxy) -> None:
    """Red-team #5: four admissions reach a stalled Redis from a freshly started gateway; each times out
    (503) and is undone. When Redis runs the queued admissions after the stall, their leases must be
    given back promptly, not held for the lease TTL (30 s) while the client gets 429."""
    limits = TierLimits(concurrency=4)
    limiter = limiter_at(proxy.url, prefix, command_timeout_ms=200, probe_interval_s=0.2)
    try:
        assert await limiter.warm_up()  # as the app does at start-up
        proxy.stall()
        during = await admit_all(limiter, limits, 4)
        assert all(isinstance(r, LimiterUnavailable) for r in during)
        await asyncio.sleep(6.0)  # longer than an undo used to try (three attempts, about 3.5 s)
        proxy.resume()

        # the leases are given back within a couple of seconds of recovery, far inside their TTL
        deadline = time.monotonic() + 8.0
        while True:
            await asyncio.sleep(0.25)
            after = await admit_all(limiter, limits, 4)
            admitted = [r for r in after if isinstance(r, Admission)]
            for admission in admitted:
                await admission.settle(0)
            if len(admitted) == 4:
                break
            assert all(isinstance(r, Admission | RateLimited | LimiterUnavailable) for r in after)
            assert time.monotonic() < deadline, f"still refused after the stall: {after}"
        assert limiter.status().undo_failures == 0  # every undo landed once Redis answered
        assert not [k for k in await redis_keys(prefix) if k.endswith(":c")]
    finally:
        await limiter.aclose()
