"""Exactness across replicas: three OS processes, each with its own RateLimiter on one Redis,
fire 2N concurrent admissions against a limit of N. Exactly N get through."""

from __future__ import annotations

import pytest

from gateway.policy.sections import TierLimits
from tests.support.redis import redis_keys, run_replicas

pytestmark = pytest.mark.redis

N = 30


@pytest.mark.parametrize(
    ("limits", "reserve", "limit_name"),
    [
        (TierLimits(requests=f"{N}/hour"), 0, "requests"),
        (TierLimits(tokens=f"{N * 100}/hour"), 100, "tokens"),
        (TierLimits(concurrency=N), 0, "concurrency"),
    ],
    ids=["requests", "tokens", "concurrency"],
)
async def test_exactly_n_admitted_across_three_processes(
    prefix: str, limits: TierLimits, reserve: int, limit_name: str
) -> None:
    results = run_replicas(prefix, limits, replicas=3, admissions=2 * N, reserve=reserve)
    assert sum(r.admitted for r in results) == N
    assert sum(r.refused.get(limit_name, 0) for r in results) == N
    assert all(r.errors == 0 for r in results)
    # every replica settled its admissions: no lease is left behind
    assert not [k for k in await redis_keys(prefix) if k.endswith(":c")]
