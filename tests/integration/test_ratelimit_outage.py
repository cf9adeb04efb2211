"""Redis outages: refused connections and a Redis that accepts but never answers.

fail_closed raises LimiterUnavailable (503); fail_open falls back to per-replica limits and reports
degraded. Nothing else escapes, and no call waits much longer than the command timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from gateway.policy.sections import TierLimits
from gateway.ratelimit import LimiterUnavailable, OnRedisError, RateLimitConfig, RateLimited, RateLimiter
from tests.unit.ratelimit.support import REDIS_URL, RedisProxy, free_port, purge, unique_prefix

pytestmark = pytest.mark.redis

LIMITS = TierLimits(requests="3/minute", concurrency=5)


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    p = unique_prefix()
    yield p
    await purge(p)


@pytest.fixture
async def proxy() -> AsyncIterator[RedisProxy]:
    p = await RedisProxy().start()
    yield p
    await p.close()


def limiter_at(url: str, prefix: str, **config: float) -> RateLimiter:
    return RateLimiter(RateLimitConfig(redis_url=url, key_prefix=prefix, **config))


async def timed_admit(limiter: RateLimiter, mode: OnRedisError) -> tuple[float, object]:
    start = time.perf_counter()
    try:
        result: object = await limiter.admit("alice", LIMITS, 0, mode)
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
