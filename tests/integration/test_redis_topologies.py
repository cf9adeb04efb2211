"""Rate limits on real Redis topologies, started from the local redis-server: a Cluster of three masters
and a master with a replica under Sentinel. Gateways are real ``python -m gateway serve`` processes.

- On the Cluster every key one Lua script touches shares the client's hash tag (one slot), and 2N
  concurrent requests over three gateways admit exactly N.
- Under Sentinel, killing the master makes Sentinel promote the replica; the gateway answers per
  ``on_redis_error`` meanwhile (503 with fail_closed, never 500) and serves again without a restart.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.policy.sections import TierLimits
from gateway.ratelimit import RateLimitConfig, RateLimiter
from tests.fakes.engine import FakeEngine
from tests.support.redis_topologies import MISSING, Cluster, SentinelSetup, start_cluster, start_sentinel
from tests.support.replicas import (
    Bundle,
    GatewayProcess,
    apply_limits,
    burst,
    chat,
    short_engine,
    start_replicas,
    stop_all,
)

pytestmark = [pytest.mark.redis, pytest.mark.skipif(MISSING is not None, reason=MISSING or "")]

MODEL = "qwen3-8b"
GENEROUS = {"requests": "100000/hour", "concurrency": 64}


@pytest.fixture(scope="module")
def engine() -> Iterator[FakeEngine]:
    with short_engine(MODEL) as fake:
        yield fake


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    shared = Bundle(tmp_path_factory.mktemp("topo-bundle") / "policies")
    shared.set_limits(GENEROUS)
    return shared


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    topology = start_cluster(tmp_path_factory.mktemp("cluster"))
    yield topology
    topology.stop()


@pytest.fixture(scope="module")
def sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelSetup]:
    topology = start_sentinel(tmp_path_factory.mktemp("sentinel"))
    yield topology
    topology.stop()


def cluster_keys(cluster: Cluster, pattern: str) -> dict[str, int]:
    """Every key matching ``pattern`` on any master, with its hash slot."""
    found: dict[str, int] = {}
    for server in cluster.servers:
        client = server.client(decode_responses=True)
        try:
            for key in client.scan_iter(match=pattern, count=1000):
                found[key] = int(client.cluster("keyslot", key))
        finally:
            client.close()
    return found


# --- Cluster --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("client_id", ["alice", "odd {id} with braces"])
async def test_every_key_of_a_client_shares_one_slot(cluster: Cluster, client_id: str) -> None:
    """admit, settle, refresh and cancel each touch one client's keys in one script: on a Cluster they
    must all hash to one slot (a CROSSSLOT error would turn every admission into a storage failure)."""
    prefix = f"topo:{time.monotonic_ns()}:"
    limiter = RateLimiter(RateLimitConfig(redis_url=cluster.url, key_prefix=prefix, command_timeout_ms=1000))
    limits = TierLimits(requests="5/minute;100/day", tokens="1000/minute", concurrency=2)
    try:
        assert await limiter.warm_up()
        held = await limiter.admit(client_id, limits, 100, "fail_closed")
        done = await limiter.admit(client_id, limits, 100, "fail_closed")
        await done.settle(40)
        await limiter.refresh_leases()
        keys = cluster_keys(cluster, prefix + "*")
        assert len(keys) >= 5, keys  # lease set, undo marker, two request windows, one token window
        assert len(set(keys.values())) == 1, keys
        await held.settle(100)
        assert limiter.status().storage_errors == 0
    finally:
        await limiter.aclose()


async def test_exactly_n_admitted_across_three_gateways_on_the_cluster(
    engine: FakeEngine, bundle: Bundle, cluster: Cluster, tmp_path: Path
) -> None:
    n = 15
    replicas = start_replicas(3, bundle.root, engine.url, cluster.url, tmp_path, key_prefix="topo:exact:")
    try:
        apply_limits(bundle, replicas, {"requests": f"{n}/hour"})
        statuses = await burst(replicas, 2 * n, chat(MODEL))
        assert statuses == Counter({200: n, 429: n})
        # every replica reports the cluster as healthy shared storage
        assert all(r.readyz()["ratelimit"]["degraded"] is False for r in replicas)
    finally:
        stop_all(replicas)
        bundle.set_limits(GENEROUS)


# --- Sentinel -------------------------------------------------------------------------------------------


def status_of(replica: GatewayProcess) -> int:
    try:
        return httpx.post(replica.api + "/chat/completions", json=chat(MODEL), timeout=30).status_code
    except httpx.HTTPError:
        return -1  # no answer at all: as bad as a 500 here


async def test_a_sentinel_failover_is_served_per_policy_and_recovers_without_restart(
    engine: FakeEngine, bundle: Bundle, sentinel: SentinelSetup, tmp_path: Path
) -> None:
    assert sentinel.master is not None and sentinel.replica is not None
    bundle.set_limits(GENEROUS, on_redis_error="fail_closed")
    replicas = start_replicas(1, bundle.root, engine.url, sentinel.url, tmp_path, key_prefix="topo:failover:")
    gateway = replicas[0]
    try:
        assert status_of(gateway) == 200
        sentinel.master.kill()

        seen: list[int] = []
        deadline = time.monotonic() + 60
        # serve through the failover: 503 (fail_closed) while there is no master, then 200 again
        while not (seen and seen[-1] == 200 and 503 in seen) and time.monotonic() < deadline:
            seen.append(await asyncio.to_thread(status_of, gateway))
            await asyncio.sleep(0.1)
        assert set(seen) <= {200, 503}, Counter(seen)
        assert seen[-1] == 200, Counter(seen)
        assert sentinel.master_port() == sentinel.replica.port  # the replica was promoted
        # the promoted master holds the shared counters now
        promoted = sentinel.replica.client()
        try:
            assert list(promoted.scan_iter(match="topo:failover:*"))
        finally:
            promoted.close()
        for _ in range(5):
            assert status_of(gateway) == 200
    finally:
        stop_all(replicas)
