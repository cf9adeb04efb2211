"""Redis storage, shared by every replica: one Lua call per admission, time from Redis TIME.

The client is built by `limits`' storage registry (``async+redis://``, ``async+rediss://``,
``async+redis+sentinel://``, ``async+redis+cluster://``) with the redis-py implementation, so TLS,
passwords, Sentinel and Cluster come from one well-tested place. Window counting runs in our own
Lua because `limits` has no primitive that checks several windows, a token reservation and a lease
in one atomic step, and its moving window reads the replica's clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence
from importlib.resources import files
from typing import Any, cast

from limits.aio.storage import RedisStorage
from limits.aio.storage.redis.redispy import RedispyBridge
from limits.storage import storage_from_string
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript

from ._config import RateLimitConfig
from ._plan import FAILED_KINDS, Outcome, Plan, WindowState
from ._store import AdmissionCancelled, lease_key, request_key, token_key, undo_key

# A cancel runs in the background after a failure, so it may wait longer than an admission.
CANCEL_TIMEOUT_S = 1.0
# Markers and tombstones must outlive every attempt of a cancel (a few seconds) by far.
UNDO_TTL_FLOOR_MS = 10_000
_CANCELLED = 4  # admit.lua's "failed" code for a tombstoned admission


def _script(name: str) -> bytes:
    return files("gateway.ratelimit").joinpath("lua", name).read_bytes()


def _storage_uri(url: str) -> str:
    return url if url.startswith("async+") else "async+" + url


def _client(url: str, timeout_s: float) -> Any:
    """A redis-py client (redis.asyncio.Redis or RedisCluster) whose every command gives up after
    ``timeout_s``: the socket timeout is per connection, so each time budget needs its own client."""
    options: dict[str, Any] = {
        "implementation": "redispy",
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        # a retry would multiply the time budget; the limiter decides what a failure means
        "retry": Retry(NoBackoff(), 0),
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
        self._client: Any = _client(self._url, self._timeout)
        self._admit = cast(AsyncScript, self._client.register_script(_script("admit.lua")))
        self._settle = cast(AsyncScript, self._client.register_script(_script("settle.lua")))
        self._refresh = cast(AsyncScript, self._client.register_script(_script("refresh.lua")))
        self._cancel_source = _script("cancel.lua")
        # built on the first cancel only: most processes never need it
        self._cancel_client: Any = None
        self._cancel: AsyncScript | None = None

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
        async with asyncio.timeout(self._timeout):
            reply = await self._admit(keys=keys, args=args)
        return _decode(plan, cast(Sequence[int], reply))

    async def settle(
        self, base: str, plan: Plan, lease_id: str | None, token_delta: int, starts: tuple[int, ...]
    ) -> None:
        keys = [lease_key(base), undo_key(base, lease_id or "")]
        keys += [token_key(base, w.length_s) for w in plan.tokens]
        args: list[int | str] = [lease_id or "", token_delta, *starts]
        async with asyncio.timeout(self._timeout):
            await self._settle(keys=keys, args=args)

    async def cancel(self, base: str, plan: Plan, lease_id: str) -> bool:
        if self._cancel is None:
            self._cancel_client = _client(self._url, CANCEL_TIMEOUT_S)
            self._cancel = cast(AsyncScript, self._cancel_client.register_script(self._cancel_source))
        keys = [lease_key(base), undo_key(base, lease_id)] + [base + slot.suffix for slot in plan.slots]
        args: list[int | str] = [len(plan.requests), lease_id, self._undo_ttl_ms]
        async with asyncio.timeout(CANCEL_TIMEOUT_S):
            return bool(await self._cancel(keys=keys, args=args))

    async def refresh(self, base: str, lease_ids: Collection[str], lease_ttl_ms: int) -> None:
        async with asyncio.timeout(self._timeout):
            await self._refresh(keys=[lease_key(base)], args=[lease_ttl_ms, *lease_ids])

    async def ping(self) -> bool:
        async with asyncio.timeout(self._timeout):
            return bool(await self._client.ping())

    async def warm_up(self, timeout_s: float) -> bool:
        """Open a connection and load the scripts, so the first admissions need one round trip
        (and so does a first cancel, which comes when Redis is already struggling)."""
        async with asyncio.timeout(timeout_s):
            for source in (
                self._admit.script,
                self._settle.script,
                self._refresh.script,
                self._cancel_source,
            ):
                await self._client.script_load(source)
            return bool(await self._client.ping())

    async def aclose(self) -> None:
        await self._client.aclose()
        if self._cancel_client is not None:
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
