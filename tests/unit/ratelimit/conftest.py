"""One fixture runs the behavioural suite against each storage: memory and real Redis (db 15)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from gateway.ratelimit import RateLimiter
from tests.support.ratelimit import Backend


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    b = Backend(request.param)
    try:
        yield b
    finally:
        await b.close()


@pytest.fixture
def make_limiter(backend: Backend) -> Callable[..., Awaitable[RateLimiter]]:
    return backend.limiter
