"""Shared test helpers (moved out of tests/unit/ratelimit/conftest.py)."""

from __future__ import annotations

from typing import Any

from gateway.ratelimit import RateLimitConfig, RateLimiter
from tests.support.redis import REDIS_URL, purge, redis_keys, unique_prefix


class Backend:
    """Builds limiters on one storage and shows what that storage holds."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.prefix = unique_prefix()
        self.limiters: list[RateLimiter] = []

    async def limiter(self, **config: Any) -> RateLimiter:
        url = REDIS_URL if self.kind == "redis" else None
        # a roomy timeout: this suite checks behaviour on a shared 2-core box; outage tests use 50 ms
        config.setdefault("command_timeout_ms", 1000)
        limiter = RateLimiter(RateLimitConfig(redis_url=url, key_prefix=self.prefix, **config))
        self.limiters.append(limiter)
        assert await limiter.warm_up()
        return limiter

    async def ttls(self) -> dict[str, int]:
        """Redis keys of this test with their PTTL (empty for memory)."""
        return await redis_keys(self.prefix) if self.kind == "redis" else {}

    async def close(self) -> None:
        for limiter in self.limiters:
            await limiter.aclose()
        if self.kind == "redis":
            await purge(self.prefix)
