"""Bursts across three gateway processes on one healthy Redis, with the production command timeout
(50 ms) and fail_closed: a burst keeps each replica's event loop busy, and that must never read as a
Redis failure. Exactly the limit is admitted, the rest get 429, and no request gets 503 (or 500)."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator

import pytest

from tests.fakes.engine import FakeEngine
from tests.support.redis import REDIS_URL
from tests.support.replicas import (
    Bundle,
    GatewayProcess,
    apply_limits,
    burst,
    chat,
    keys_purged,
    short_engine,
    start_replicas,
    stop_all,
)

pytestmark = pytest.mark.redis

MODEL = "qwen3-8b"
PREFIX = f"test:bursts:{uuid.uuid4().hex[:8]}:"  # keys of this module only
LIMIT = 40


@pytest.fixture(scope="module")
def engine() -> Iterator[FakeEngine]:
    with short_engine(MODEL) as fake:
        yield fake


@pytest.fixture(autouse=True)
def clean_keys() -> Iterator[None]:
    with keys_purged(PREFIX + "*"):
        yield


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    shared = Bundle(tmp_path_factory.mktemp("bursts-bundle") / "policies")
    shared.set_limits({"requests": f"{LIMIT}/hour"})
    return shared


@pytest.fixture(scope="module")
def replicas(
    engine: FakeEngine, bundle: Bundle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[GatewayProcess]]:
    # redis_timeout_ms=None: the production default, which the bursts used to trip
    procs = start_replicas(
        3,
        bundle.root,
        engine.url,
        REDIS_URL,
        tmp_path_factory.mktemp("bursts"),
        redis_timeout_ms=None,
        key_prefix=PREFIX,
    )
    apply_limits(bundle, procs, {"requests": f"{LIMIT}/hour"})
    yield procs
    stop_all(procs)


@pytest.mark.parametrize("size", [100, 300, 1000])
async def test_a_burst_gets_exactly_the_limit_and_429s_only(
    replicas: list[GatewayProcess], size: int
) -> None:
    statuses = await burst(replicas, size, chat(MODEL))
    assert statuses == Counter({200: LIMIT, 429: size - LIMIT})
    assert all(r.readyz()["ratelimit"]["degraded"] is False for r in replicas)
