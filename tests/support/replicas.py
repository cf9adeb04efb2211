"""Real gateway replicas as OS processes (``python -m gateway serve``) on one Redis, and a policy bundle
whose limits a test can rewrite while they run (each replica hot-reloads it; SIGHUP makes it prompt).

Not fixtures: tests/integration/test_ratelimit_gateway.py builds its fixtures from these.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import redis
import yaml

from tests.fakes.engine import FakeEngine
from tests.fakes.script import Script
from tests.support.gateway import DEFAULT_POLICIES, REPO
from tests.support.ports import free_port
from tests.support.processes import stop_process
from tests.support.redis import REDIS_URL, RedisProxy

# With --auth none every request is the `anonymous` client; the limiter keys it under its default prefix.
ANONYMOUS_BASE = "menshen:rl:{anonymous}:"
TIER = "standard"  # clients.yaml's default_tier, which `anonymous` gets
START_TIMEOUT_S = 90.0  # the box is shared and has 2 cores: three cold imports in parallel are slow
# These tests check exactness under contention, not latency: on a busy 2-core box a 50 ms command
# timeout trips now and then, and fail_closed would turn that into 503s.
REDIS_TIMEOUT_MS = 2000


class Bundle:
    """A copy of policies/default whose limits.yaml is rewritten per test."""

    def __init__(self, root: Path) -> None:
        self.root = root
        shutil.copytree(DEFAULT_POLICIES, root)

    def set_limits(self, tier: Mapping[str, Any], on_redis_error: str = "fail_closed") -> None:
        """Give the default tier exactly ``tier`` (requests / tokens / concurrency); the nonce makes every
        write a new bundle version, so a reload can be told apart from the previous one."""
        doc = {"tiers": {TIER: dict(tier)}, "on_redis_error": on_redis_error}
        text = f"# test nonce {uuid.uuid4().hex}\n" + yaml.safe_dump(doc, sort_keys=True)
        staged = self.root.parent / f".limits-{uuid.uuid4().hex}.yaml"
        staged.write_text(text, encoding="utf-8")
        os.replace(staged, self.root / "limits.yaml")  # atomic: a reload never sees half a file


class GatewayProcess:
    """One ``python -m gateway serve`` subprocess; its output goes to a log file in its data dir."""

    def __init__(
        self,
        bundle: Path,
        upstream: str,
        redis_url: str,
        data_dir: Path,
        *,
        redis_timeout_ms: int | None = REDIS_TIMEOUT_MS,
        key_prefix: str | None = None,
    ) -> None:
        """``redis_timeout_ms=None`` keeps the production default; ``key_prefix`` isolates a test's keys."""
        self.port = free_port()
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = data_dir / "gateway.log"
        args = [
            sys.executable,
            "-m",
            "gateway",
            "serve",
            "--auth",
            "none",
            "--redis-url",
            redis_url,
            "--policies",
            str(bundle),
            "--upstream",
            upstream,
            "--port",
            str(self.port),
            "--data-dir",
            str(data_dir),
            "--first-token-timeout",
            "30",
            "--idle-timeout",
            "30",
        ]
        if redis_timeout_ms is not None:
            args += ["--redis-timeout-ms", str(redis_timeout_ms)]
        if key_prefix is not None:
            args += ["--redis-key-prefix", key_prefix]
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api(self) -> str:
        return self.url + "/v1"

    def healthy(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {self.proc.returncode}: {self.log_tail()}")
        try:
            return httpx.get(self.url + "/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def readyz(self) -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(self.url + "/readyz", timeout=5).json()
        return body

    def policy_version(self) -> str:
        return str(self.readyz()["policy"]["version"])

    def reload(self) -> None:
        self.proc.send_signal(signal.SIGHUP)

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        stop_process(self.proc)


def start_replicas(
    count: int,
    bundle: Path,
    upstream: str,
    redis_url: str,
    data_root: Path,
    *,
    redis_timeout_ms: int | None = REDIS_TIMEOUT_MS,
    key_prefix: str | None = None,
) -> list[GatewayProcess]:
    """Start ``count`` replicas at once (imports overlap) and wait until each answers /healthz."""
    replicas = [
        GatewayProcess(
            bundle,
            upstream,
            redis_url,
            data_root / f"replica-{i}",
            redis_timeout_ms=redis_timeout_ms,
            key_prefix=key_prefix,
        )
        for i in range(count)
    ]
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        pending = list(replicas)
        while pending:
            pending = [r for r in pending if not r.healthy()]
            if pending and time.monotonic() > deadline:
                raise RuntimeError(f"gateway did not start: {pending[0].log_tail()}")
            time.sleep(0.1)
    except BaseException:
        stop_all(replicas)
        raise
    return replicas


def stop_all(replicas: Iterable[GatewayProcess]) -> None:
    for replica in replicas:
        if replica.proc.poll() is None:
            replica.proc.terminate()
    for replica in replicas:
        replica.stop()


def apply_limits(
    bundle: Bundle,
    replicas: Sequence[GatewayProcess],
    tier: Mapping[str, Any],
    on_redis_error: str = "fail_closed",
    within: float = 15.0,
) -> None:
    """Rewrite the limits and wait until every replica serves the new bundle version."""
    before = {r.port: r.policy_version() for r in replicas}
    bundle.set_limits(tier, on_redis_error)
    for replica in replicas:
        replica.reload()
    deadline = time.monotonic() + within
    while True:
        versions = {r.port: r.policy_version() for r in replicas}
        fresh = all(versions[p] != before[p] for p in versions)
        if fresh and len(set(versions.values())) == 1:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"replicas did not reload the policy: {before} -> {versions}")
        time.sleep(0.05)


@contextmanager
def keys_purged(pattern: str) -> Iterator[None]:
    """Delete the test Redis's keys matching ``pattern`` before and after the block."""
    client = redis.Redis.from_url(REDIS_URL)

    def purge() -> None:
        keys = list(client.scan_iter(match=pattern, count=1000))
        if keys:
            client.delete(*keys)

    try:
        purge()
        yield
        purge()
    finally:
        client.close()


def short_engine(model: str) -> FakeEngine:
    """A fake engine serving ``model`` that answers the "short" script (see `chat`)."""
    return FakeEngine(models=(model,), scripts={"short": Script.of("All good here.")})


def chat(model: str, script: str = "short") -> dict[str, Any]:
    """A small non-streamed chat request that the fake engine answers with ``script``."""
    return {
        "model": model,
        "messages": [{"role": "user", "content": f"[[script:{script}]] go"}],
        "max_tokens": 16,
    }


async def burst(
    replicas: Sequence[GatewayProcess], count: int, payload: Mapping[str, Any], *, in_flight: int = 300
) -> Counter[int]:
    """``count`` requests over the replicas, round robin, ``in_flight`` at a time (a new connection
    each); returns how many got each HTTP status."""
    # our own gate rather than httpx's pool queue, which grows slow with hundreds of waiters; fresh
    # connections, so that no request races a server closing an idle keep-alive connection
    gate = asyncio.Semaphore(in_flight)
    limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:

        async def one(i: int) -> int:
            async with gate:
                reply = await client.post(replicas[i % len(replicas)].api + "/chat/completions", json=payload)
                return reply.status_code

        statuses = await asyncio.gather(*(one(i) for i in range(count)))
    return Counter(statuses)


class ProxyThread:
    """A RedisProxy on an event loop of its own thread, for gateways that run in other threads.
    Setting ``blackhole`` from the test thread is safe: the pumps only read the flag."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="redis-proxy")
        self._thread.start()
        self.proxy = asyncio.run_coroutine_threadsafe(RedisProxy().start(), self._loop).result(10)

    @property
    def url(self) -> str:
        return self.proxy.url

    @property
    def blackhole(self) -> bool:
        return self.proxy.blackhole

    @blackhole.setter
    def blackhole(self, value: bool) -> None:
        self.proxy.blackhole = value

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.proxy.close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


__all__ = [
    "ANONYMOUS_BASE",
    "TIER",
    "Bundle",
    "GatewayProcess",
    "ProxyThread",
    "apply_limits",
    "burst",
    "chat",
    "keys_purged",
    "short_engine",
    "start_replicas",
    "stop_all",
]
