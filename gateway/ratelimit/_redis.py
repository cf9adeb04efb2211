"""Redis storage, shared by every replica: one Lua call per admission, time from Redis TIME.

The client is built by `limits`' storage registry (``async+redis://``, ``async+rediss://``,
``async+redis+sentinel://``, ``async+redis+cluster://``) with the redis-py implementation, so TLS,
passwords, Sentinel and Cluster come from one well-tested place. Window counting runs in our own
Lua because `limits` has no primitive that checks several windows, a token reservation and a lease
in one atomic step, and its moving window reads the replica's clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Coroutine, Sequence
from importlib.resources import files
from typing import Any, TypeVar, cast

from limits.aio.storage import RedisStorage
from limits.aio.storage.redis.redispy import RedispyBridge
from limits.storage import storage_from_string
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript

from ._config import RateLimitConfig
from ._deadline import LoopDeadline
from ._plan import FAILED_KINDS, Outcome, Plan, WindowState
from ._store import AdmissionCancelled, lease_key, request_key, token_key, undo_key

# A cancel runs in the background after a failure, so it may wait longer than an admission.
CANCEL_TIMEOUT_S = 1.0
# Markers and tombstones must outlive every attempt of a cancel (a few seconds) by far.
UNDO_TTL_FLOOR_MS = 10_000
T = TypeVar("T")
_CANCELLED = 4  # admit.lua's "failed" code for a tombstoned admission
# Connections per client (per node on a Cluster). redis-py raises MaxConnectionsError past its pool
# size (100 by default), which a burst of concurrent admissions reaches on a healthy Redis: commands
# past this many wait for a connection instead, within their own time budget.
POOL_SIZE = 100


def _script(name: str) -> bytes:
    return files("gateway.ratelimit").joinpath("lua", name).read_bytes()


def _storage_uri(url: str) -> str:
    return url if url.startswith("async+") else "async+" + url


def _client(url: str, timeout_s: float) -> Any:
    """A redis-py client (redis.asyncio.Redis or RedisCluster) whose every command gives up after
    ``timeout_s``: the socket timeout is per connection, so each time budget needs its own client.
    It counts wall time, so it is set to the command's ceiling; `LoopDeadline` applies the budget."""
    options: dict[str, Any] = {
        "implementation": "redispy",
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        # a retry would multiply the time budget; the limiter decides what a failure means
        "retry": Retry(NoBackoff(), 0),
        "max_connections": POOL_SIZE,
    }
    storage = storage_from_string(_storage_uri(url), **options)
    if not isinstance(storage, RedisStorage) or not isinstance(storage.bridge, RedispyBridge):
        raise ValueError("redis_url does not name a Redis storage")
    return storage.bridge.get_connection()


class RedisStore:
    suspends = True  # does admit() await I/O (and so can be interrupted)?
    undoable = True  # a timed-out admission may have run: admit leaves a marker for cancel
    kind = "redis"

    def __init__(self, config: RateLimitConfig) -> None:
        if config.redis_url is None:
            raise ValueError("RedisStore needs a redis_url")
        self._url = config.redis_url
        self._timeout = config.command_timeout_ms / 1000
        self._undo_ttl_ms = max(int(config.lease_ttl_s * 1000), UNDO_TTL_FLOOR_MS)
        # redis-py clients connect on first use, so building both here does no I/O
        self._allowance = allowance = config.loop_lag_allowance_ms / 1000
        self._client: Any = _client(self._url, self._timeout + allowance)
        self._admit = cast(AsyncScript, self._client.register_script(_script("admit.lua")))
        self._settle = cast(AsyncScript, self._client.register_script(_script("settle.lua")))
        self._refresh = cast(AsyncScript, self._client.register_script(_script("refresh.lua")))
        # Cancels come when Redis is already struggling: their client is built and warmed with the
        # main one, so a first cancel never has to open a connection and handshake during a stall.
        self._cancel_client: Any = _client(self._url, CANCEL_TIMEOUT_S + allowance)
        self._cancel = cast(AsyncScript, self._cancel_client.register_script(_script("cancel.lua")))
        # one per process and loop; its health probe uses the cancel client's (warm, rarely busy) pool
        self._deadline = LoopDeadline(allowance, probe=self._cancel_client.ping)
        self._slots = asyncio.Semaphore(POOL_SIZE)
        self._cancel_slots = asyncio.Semaphore(POOL_SIZE)

    async def admit(self, base: str, plan: Plan, tokens: int, lease_id: str, lease_ttl_ms: int) -> Outcome:
        keys = [lease_key(base), undo_key(base, lease_id)]
        keys += [request_key(base, w.length_s) for w in plan.requests]
        keys += [token_key(base, w.length_s) for w in plan.tokens]
        args: list[int | str] = [
            len(plan.requests),
            tokens,
            plan.concurrency,
            lease_id,
            lease_ttl_ms,
            self._undo_ttl_ms,
        ]
        for w in (*plan.requests, *plan.tokens):
            args += [w.limit, w.length_s * 1000]
        reply = await self._bounded(self._admit(keys=keys, args=args))
        return _decode(plan, cast(Sequence[int], reply))

    async def settle(
        self, base: str, plan: Plan, lease_id: str | None, token_delta: int, starts: tuple[int, ...]
    ) -> None:
        keys = [lease_key(base), undo_key(base, lease_id or "")]
        keys += [token_key(base, w.length_s) for w in plan.tokens]
        args: list[int | str] = [lease_id or "", token_delta, *starts]
        await self._bounded(self._settle(keys=keys, args=args))

    async def cancel(self, base: str, plan: Plan, lease_id: str) -> bool:
        keys = [lease_key(base), undo_key(base, lease_id)] + [base + slot.suffix for slot in plan.slots]
        args: list[int | str] = [len(plan.requests), lease_id, self._undo_ttl_ms]
        return bool(
            await self._bounded(self._cancel(keys=keys, args=args), CANCEL_TIMEOUT_S, self._cancel_slots)
        )

    async def refresh(self, base: str, lease_ids: Collection[str], lease_ttl_ms: int) -> None:
        await self._bounded(self._refresh(keys=[lease_key(base)], args=[lease_ttl_ms, *lease_ids]))

    async def ping(self) -> bool:
        return bool(await self._bounded(self._client.ping()))

    async def warm_up(self, timeout_s: float) -> bool:
        """Open a connection on each client and load the scripts, so the first admissions need one
        round trip, and so does a first cancel (which comes when Redis is already struggling)."""
        async with asyncio.timeout(timeout_s):
            for script in (self._admit, self._settle, self._refresh, self._cancel):
                await self._client.script_load(script.script)
            return bool(await self._client.ping()) and bool(await self._cancel_client.ping())

    async def _bounded(
        self,
        call: Coroutine[Any, Any, T],
        budget_s: float | None = None,
        slots: asyncio.Semaphore | None = None,
    ) -> T:
        """One command within its budget. Past the pool size it first waits for a free connection: that
        wait is our own queue, not Redis time, and is bounded by the ceiling alone (a dead Redis frees
        the slots as its commands time out)."""
        budget = budget_s or self._timeout
        gate = slots or self._slots
        try:
            async with asyncio.timeout(budget + self._allowance):
                await gate.acquire()
        except BaseException:
            call.close()  # never started: closed, so it is not reported as never awaited
            raise
        try:
            return await self._deadline.run(call, budget)
        finally:
            gate.release()

    async def aclose(self) -> None:
        await self._deadline.aclose()
        await self._client.aclose()
        await self._cancel_client.aclose()


def _decode(plan: Plan, reply: Sequence[int]) -> Outcome:
    if len(reply) == 2 and int(reply[1]) == _CANCELLED:
        raise AdmissionCancelled()
    admitted, failed, retry_ms, in_flight = (int(v) for v in reply[:4])
    states: list[WindowState] = []
    for i, window in enumerate((*plan.requests, *plan.tokens)):
        remaining, reset_ms, start = (int(v) for v in reply[4 + 3 * i : 7 + 3 * i])
        states.append(WindowState(window, remaining, reset_ms, start))
    nreq = len(plan.requests)
    return Outcome(
        admitted=bool(admitted),
        failed=FAILED_KINDS[failed],
        retry_ms=retry_ms,
        in_flight=in_flight,
        requests=tuple(states[:nreq]),
        tokens=tuple(states[nreq:]),
    )
