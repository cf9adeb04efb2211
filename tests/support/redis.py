"""Reusable helpers for rate-limit tests: Redis key hygiene, a controllable TCP proxy in front of
Redis (to simulate an outage or a black hole), and N-process replicas sharing one Redis.

Also used by tests/integration (and by the multi-gateway HTTP tests), so nothing here is a fixture.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.synchronize
import os
import uuid
from dataclasses import dataclass, field

import redis.asyncio as aioredis

from gateway.policy.sections import TierLimits
from gateway.ratelimit import LimiterError, RateLimitConfig, RateLimited, RateLimiter

REDIS_URL = os.environ.get("GATEWAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def unique_prefix() -> str:
    return f"test:rl:{uuid.uuid4().hex[:12]}:"


async def redis_keys(prefix: str) -> dict[str, int]:
    """Every key under ``prefix`` with its PTTL in ms (-1 = no TTL, -2 = gone)."""
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [k async for k in client.scan_iter(match=prefix + "*", count=1000)]
        if not keys:
            return {}
        async with client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.pttl(key)
            ttls = await pipe.execute()
        return {k.decode(): int(t) for k, t in zip(keys, ttls, strict=True)}
    finally:
        await client.aclose()


async def redis_state(prefix: str) -> dict[str, object]:
    """Every key under ``prefix`` with its content (hash fields, sorted set members, string value),
    to compare what Redis holds before and after an operation."""
    client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        state: dict[str, object] = {}
        async for key in client.scan_iter(match=prefix + "*", count=1000):
            kind = await client.type(key)
            if kind == "hash":
                state[key] = await client.hgetall(key)
            elif kind == "zset":
                state[key] = sorted(await client.zrange(key, 0, -1))
            else:
                state[key] = await client.get(key)
        return state
    finally:
        await client.aclose()


async def purge(prefix: str) -> None:
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [k async for k in client.scan_iter(match=prefix + "*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@dataclass
class RedisProxy:
    """TCP proxy to Redis. ``blackhole = True`` keeps accepting and reading but never answers,
    like a hung Redis; ``False`` forwards again (new connections work at once).
    `delay_next_reply` holds back the next reply Redis sends, whichever connection it is on: the
    command has run in Redis, only its answer is late (a slow network or a busy Redis).
    `stall` holds every byte in both directions, in order, until `resume`: as a Redis that stops
    serving for a while (a long fork, a blocking command, a network freeze) and then runs what was
    queued, even for clients that gave up and closed meanwhile."""

    target: tuple[str, int] = ("127.0.0.1", 6379)
    port: int = 0  # 0: any free port; a fixed one lets a test bring a closed proxy back at the same URL
    blackhole: bool = False
    reply_delay_s: float = 0.0
    delayed_replies: int = 0  # how many more replies to hold back by reply_delay_s
    _server: asyncio.Server | None = None
    _flowing: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}/15"

    async def start(self) -> RedisProxy:
        self._flowing.set()
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        return self

    def delay_next_reply(self, seconds: float) -> None:
        """Safe from another thread (ProxyThread): the pumps only read these between reads."""
        self.reply_delay_s = seconds
        self.delayed_replies = 1

    def stall(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    async def close(self) -> None:
        self._flowing.set()
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        up_writer: asyncio.StreamWriter | None = None
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
            await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer, replies=True))
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            for w in (writer, up_writer):
                if w is not None:
                    w.close()
            self._tasks.discard(task)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, replies: bool = False
    ) -> None:
        while data := await reader.read(65536):
            if self.blackhole:
                continue  # swallowed: the peer waits for an answer that never comes
            await self._flowing.wait()
            if replies and self.delayed_replies > 0:
                self.delayed_replies -= 1
                await asyncio.sleep(self.reply_delay_s)  # the client may have given up and closed by now
            writer.write(data)
            await writer.drain()


# --- replicas: separate OS processes, each with its own RateLimiter on one Redis ---------------


@dataclass(frozen=True)
class ReplicaResult:
    admitted: int
    refused: dict[str, int]  # by limit name
    errors: int  # LimiterError other than RateLimited (must stay 0 with a healthy Redis)


def _replica_main(
    url: str,
    prefix: str,
    limits_json: str,
    reserve: int,
    calls: int,
    start: multiprocessing.synchronize.Barrier,
    admitted_all: multiprocessing.synchronize.Barrier,
    out: multiprocessing.Queue[ReplicaResult],
) -> None:
    out.put(asyncio.run(_replica(url, prefix, limits_json, reserve, calls, start, admitted_all)))


async def _replica(
    url: str,
    prefix: str,
    limits_json: str,
    reserve: int,
    calls: int,
    start: multiprocessing.synchronize.Barrier,
    admitted_all: multiprocessing.synchronize.Barrier,
) -> ReplicaResult:
    # a generous timeout: this checks exactness under contention, not latency on a busy 2-core box
    limiter = RateLimiter(RateLimitConfig(redis_url=url, key_prefix=prefix, command_timeout_ms=5000))
    limits = TierLimits.model_validate_json(limits_json)
    refused: dict[str, int] = {}
    errors = 0

    async def one() -> object:
        try:
            return await limiter.admit("shared-client", limits, reserve, "fail_closed")
        except RateLimited as exc:
            refused[exc.limit] = refused.get(exc.limit, 0) + 1
        except LimiterError:
            nonlocal errors
            errors += 1
        return None

    try:
        await limiter.ping()
        await asyncio.to_thread(start.wait)
        results = await asyncio.gather(*(one() for _ in range(calls)))
        admissions = [r for r in results if r is not None]
        # hold every slot until all replicas have admitted, so concurrency is really concurrent
        await asyncio.to_thread(admitted_all.wait)
        for admission in admissions:
            await admission.settle(reserve)  # type: ignore[attr-defined]
        return ReplicaResult(len(admissions), refused, errors)
    finally:
        await limiter.aclose()


def run_replicas(
    prefix: str, limits: TierLimits, *, replicas: int = 3, admissions: int, reserve: int = 0
) -> list[ReplicaResult]:
    """Start ``replicas`` processes that together fire ``admissions`` concurrent admissions for one
    client on one Redis, released at the same instant by a barrier. Returns each replica's result."""
    ctx = multiprocessing.get_context("spawn")
    start, admitted_all = ctx.Barrier(replicas), ctx.Barrier(replicas)
    out: multiprocessing.Queue[ReplicaResult] = ctx.Queue()
    share = [admissions // replicas + (1 if i < admissions % replicas else 0) for i in range(replicas)]
    procs = [
        ctx.Process(
            target=_replica_main,
            args=(REDIS_URL, prefix, limits.model_dump_json(), reserve, n, start, admitted_all, out),
        )
        for n in share
    ]
    for proc in procs:
        proc.start()
    try:
        results = [out.get(timeout=60) for _ in procs]
    finally:
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
                proc.join()
        out.close()
        out.join_thread()
    return results
