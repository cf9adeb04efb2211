"""The rate limiter: admit a request against its client's limits, settle it when it ends.

One admission is one atomic storage call that checks and charges every request window, reserves
the tokens and takes a concurrency lease, or charges nothing. Settling refunds the unused part of
the reservation and frees the lease. Leases are heartbeated by one task per limiter, so a replica
that dies stops refreshing and its leases expire after ``lease_ttl_s``.

A Redis admission that times out or loses its connection may still have run. The limiter then
answers as for any Redis failure, and undoes it in the background (lua/cancel.lua).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.policy.sections import TierLimits

from ._config import RateLimitConfig
from ._errors import LimiterUnavailable, RateLimited
from ._headers import rate_headers, retry_after_s
from ._memory import MemoryStore
from ._plan import Outcome, Plan, WindowState, compile_plan
from ._redis import CANCEL_TIMEOUT_S, UNDO_TTL_FLOOR_MS, RedisStore
from ._store import AdmissionCancelled, Store, client_base

T = TypeVar("T")
OnRedisError = Literal["fail_open", "fail_closed"]

# What a sick Redis raises: redis-py errors, socket errors, and our per-command timeout.
# RedisClusterException (an unreachable cluster at its first command) is not a RedisError.
_STORAGE_ERRORS = (RedisError, RedisClusterException, OSError, TimeoutError, AdmissionCancelled)
# Failures after which the call may have reached Redis and run there (builtin TimeoutError is an OSError).
_UNDO_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)
# Pauses between the attempts of an undo (or of freeing a lease whose settle failed): quick at first,
# then every couple of seconds, so the work lands soon after a stall ends. Attempts go on for half the
# undo marker's TTL, so the last one still finds the marker of an admission that arrived late.
_RETRY_FIRST_S = 0.1
_RETRY_MAX_S = 2.0
# A burst of timeouts must not turn into a flood of cancels against a Redis that is already sick.
_UNDO_PENDING_MAX = 1024
_PLAN_CACHE_MAX = 4096

log = logging.getLogger("gateway.ratelimit")


@dataclass(slots=True, frozen=True)
class LimiterStatus:
    """For /readyz and metrics."""

    storage: str  # "redis" or "memory"
    degraded: bool  # shared storage failing: fail_open serves local limits, fail_closed refuses
    fallbacks: int  # admissions served by the local fallback limiter
    storage_errors: int  # failed storage calls (admit, settle, heartbeat)
    undone: int  # admissions that ran in Redis although their reply was lost, since undone
    undo_failures: int  # undos given up (every attempt failed, too many pending, or shutdown)
    leases_held: int  # concurrency leases this replica holds now
    local_entries: int  # live windows and lease sets in this process's memory store


class Admission:
    """An admitted request. Call `settle` exactly once from every end path; extra calls do nothing."""

    __slots__ = (
        "_base",
        "_headers",
        "_lease_id",
        "_limiter",
        "_plan",
        "_settled",
        "_store",
        "outcome",
        "reserved_tokens",
    )

    def __init__(
        self,
        limiter: RateLimiter | None,
        store: Store | None,
        base: str,
        plan: Plan | None,
        reserved_tokens: int,
        lease_id: str | None,
        outcome: Outcome | None,
    ) -> None:
        self._limiter = limiter
        self._store = store
        self._base = base
        self._plan = plan
        self._lease_id = lease_id
        self._settled = limiter is None
        self.reserved_tokens = reserved_tokens
        self.outcome = outcome
        self._headers: dict[str, str] | None = None if outcome is not None else {}

    @property
    def headers(self) -> dict[str, str]:
        """Rate headers for the response (built on first use, then cached)."""
        if self._headers is None:
            self._headers = rate_headers(self.outcome) if self.outcome is not None else {}
        return self._headers

    @property
    def settled(self) -> bool:
        return self._settled

    async def settle(self, used_tokens: int) -> None:
        """Charge ``used_tokens`` instead of the reservation and free the concurrency slot.

        Never raises a storage error: a failed settle leaves the lease to expire by its TTL.
        Safe to call from ``finally`` blocks of cancelled tasks (the storage call is shielded).
        """
        limiter, store, plan, outcome = self._limiter, self._store, self._plan, self.outcome
        if self._settled or limiter is None or store is None or plan is None or outcome is None:
            return
        self._settled = True
        delta = max(0, used_tokens) - self.reserved_tokens if plan.tokens else 0
        starts = tuple(s.start for s in outcome.tokens)
        await limiter._settle(store, self._base, plan, self._lease_id, starts, delta)


class RateLimiter:
    def __init__(self, config: RateLimitConfig | None = None) -> None:
        self._config = config or RateLimitConfig()
        self._shared: Store = RedisStore(self._config) if self._config.redis_url else MemoryStore()
        self._fallback = MemoryStore()
        self._plans: dict[TierLimits, Plan] = {}
        self._held: dict[Store, dict[str, set[str]]] = {}
        self._lease_ttl_ms = int(self._config.lease_ttl_s * 1000)
        self._retry_for_s = max(self._lease_ttl_ms, UNDO_TTL_FLOOR_MS) / 2000
        self._replica = secrets.token_hex(6)
        self._ids = itertools.count()
        self._down_until = 0.0
        self._degraded = False
        self._fallbacks = 0
        self._errors = 0
        self._undone = 0
        self._undo_failures = 0
        self._undo_warned_at = -float("inf")
        self._heartbeat: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()  # storage calls off the caller's task
        self._undos: set[asyncio.Task[None]] = set()  # kept apart: they may retry for seconds
        self._closed = False

    # --- status ------------------------------------------------------------------------------

    @property
    def degraded(self) -> bool:
        return self._degraded

    @property
    def fallbacks(self) -> int:
        return self._fallbacks

    def status(self) -> LimiterStatus:
        return LimiterStatus(
            storage=self._shared.kind,
            degraded=self._degraded,
            fallbacks=self._fallbacks,
            storage_errors=self._errors,
            undone=self._undone,
            undo_failures=self._undo_failures,
            leases_held=sum(len(ids) for by_base in self._held.values() for ids in by_base.values()),
            local_entries=len(self._shared) if isinstance(self._shared, MemoryStore) else len(self._fallback),
        )

    async def ping(self) -> bool:
        """True when the shared storage answers within the command timeout."""
        try:
            return await self._shared.ping()
        except _STORAGE_ERRORS:
            return False

    async def warm_up(self, timeout_s: float = 2.0) -> bool:
        """Connect and load the Lua scripts ahead of traffic (call at start-up). Never raises:
        False means the storage is not reachable yet, and admissions follow on_redis_error."""
        try:
            return await self._shared.warm_up(timeout_s)
        except _STORAGE_ERRORS as exc:
            self._storage_failed(exc, "warm-up")
            return False

    # --- admission ---------------------------------------------------------------------------

    async def admit(
        self, client_id: str, limits: TierLimits, reserve_tokens: int, on_redis_error: OnRedisError
    ) -> Admission:
        """Check and charge every limit of ``limits`` for ``client_id`` at once.

        Raises RateLimited (429) or LimiterUnavailable (fail_closed while storage fails); nothing else.
        """
        plan = self._plan(limits)
        if plan.empty:
            return Admission(None, None, "", None, 0, None, None)
        reserve = max(0, reserve_tokens) if plan.tokens else 0
        # every admission gets an id, lease or not: it also names the admission's undo marker
        lease_id = f"{self._replica}:{next(self._ids)}"
        base = client_base(self._config.key_prefix, client_id)

        store = self._shared
        outcome: Outcome | None = None
        if store is not self._fallback and time.monotonic() >= self._down_until:
            try:
                outcome = await self._admit_shared(base, plan, reserve, lease_id)
            except _STORAGE_ERRORS as exc:
                self._storage_failed(exc, "admit")
            else:
                if self._degraded:
                    self._degraded = False
                    log.warning("rate limiter storage recovered; shared limits apply again")
        if outcome is None:
            if on_redis_error == "fail_closed":
                raise LimiterUnavailable()
            store = self._fallback
            self._fallbacks += 1
            outcome = await store.admit(base, plan, reserve, lease_id, self._lease_ttl_ms)

        if not outcome.admitted:
            raise self._refusal(plan, reserve, outcome)
        if plan.concurrency:
            self._held.setdefault(store, {}).setdefault(base, set()).add(lease_id)
            self._ensure_heartbeat()
        return Admission(self, store, base, plan, reserve, lease_id, outcome)

    async def _admit_shared(self, base: str, plan: Plan, reserve: int, lease_id: str) -> Outcome:
        store = self._shared
        if not store.suspends:
            return await store.admit(base, plan, reserve, lease_id, self._lease_ttl_ms)
        # redis-py can lose a cancellation that lands mid-command (redis/redis-py#2028), which would
        # leave a disconnected client's task running. The call runs in its own task instead; if the
        # caller is cancelled meanwhile, whatever it admitted is released once it completes.
        call = self._spawn(self._admit_or_undo(store, base, plan, reserve, lease_id))
        try:
            return await asyncio.shield(call)
        except asyncio.CancelledError:
            call.add_done_callback(lambda done: self._release_orphan(done, base, plan, reserve, lease_id))
            raise

    async def _admit_or_undo(
        self, store: Store, base: str, plan: Plan, reserve: int, lease_id: str
    ) -> Outcome:
        try:
            return await store.admit(base, plan, reserve, lease_id, self._lease_ttl_ms)
        except _UNDO_ERRORS:
            # the script may have run although its reply never came: whatever it charged is undone
            # in the background, while the caller answers as for any Redis failure
            if store.undoable:
                self._schedule_undo(store, base, plan, lease_id)
            raise

    def _release_orphan(
        self, done: asyncio.Task[Outcome], base: str, plan: Plan, reserve: int, lease_id: str
    ) -> None:
        if done.cancelled() or done.exception() is not None:
            return  # exception() marks a storage error as retrieved; a lost reply is already being undone
        outcome = done.result()
        if outcome.admitted:
            starts = tuple(s.start for s in outcome.tokens)
            self._spawn(self._settle_quietly(self._shared, base, plan, lease_id, starts, -reserve))

    # --- undo of admissions whose reply was lost ---------------------------------------------

    def _schedule_undo(self, store: Store, base: str, plan: Plan, lease_id: str) -> None:
        async def cancel() -> None:
            if await store.cancel(base, plan, lease_id):
                self._undone += 1

        self._retry_in_background(cancel)

    def _schedule_release(self, store: Store, base: str, plan: Plan, lease_id: str) -> None:
        """Free the lease of an admission whose settle failed. Only the lease: settle.lua with no token
        delta is idempotent, whereas a refund retried after a lost reply could be applied twice."""

        async def release() -> None:
            await store.settle(base, plan, lease_id, 0, ())

        self._retry_in_background(release)

    def _retry_in_background(self, attempt: Callable[[], Awaitable[None]]) -> None:
        if len(self._undos) >= _UNDO_PENDING_MAX:
            self._undo_failed("too many pending")
            return
        task = asyncio.get_running_loop().create_task(self._retry(attempt))
        self._undos.add(task)
        task.add_done_callback(self._undos.discard)

    async def _retry(self, attempt: Callable[[], Awaitable[None]]) -> None:
        """Run an idempotent repair until it succeeds, with backoff, for at most half the undo marker's
        TTL; never raises (a give-up is logged and counted). A stall longer than one attempt is normal:
        the repair lands within about two seconds after Redis answers again."""
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self._retry_for_s
        pause = _RETRY_FIRST_S
        try:
            while True:
                try:
                    await attempt()
                    return
                except Exception as exc:  # noqa: BLE001 - a repair never raises: every failure is counted
                    if self._closed or loop.time() + pause >= give_up_at:
                        self._undo_failed(type(exc).__name__)
                        return
                await asyncio.sleep(pause)
                pause = min(pause * 2, _RETRY_MAX_S)
        except asyncio.CancelledError:
            self._undo_failed("shutdown")
            raise

    def _undo_failed(self, why: str) -> None:
        self._undo_failures += 1
        now = time.monotonic()
        if now - self._undo_warned_at >= self._config.probe_interval_s:  # one line per interval at most
            self._undo_warned_at = now
            log.warning(
                "could not undo a rate-limit admission whose reply was lost, or free a lease whose settle "
                "failed (%s); its charge stays until its windows end (%d undos failed so far)",
                why,
                self._undo_failures,
            )

    def _plan(self, limits: TierLimits) -> Plan:
        plan = self._plans.get(limits)
        if plan is None:
            if len(self._plans) >= _PLAN_CACHE_MAX:
                self._plans.clear()
            plan = self._plans[limits] = compile_plan(limits)
        return plan

    def _refusal(self, plan: Plan, reserve: int, outcome: Outcome) -> RateLimited:
        headers = rate_headers(outcome)
        if outcome.failed == "concurrency":
            retry = self._config.concurrency_retry_after_s
            message = f"Too many concurrent requests: the limit is {plan.concurrency}."
        else:
            unit = "requests" if outcome.failed == "requests" else "tokens"
            states = outcome.requests if unit == "requests" else outcome.tokens
            cost = 1 if unit == "requests" else reserve
            binding = max((s for s in states if s.remaining < max(cost, 1)), key=_reset_key, default=None)
            retry = retry_after_s(outcome.retry_ms)
            window = binding.window if binding is not None else states[0].window
            per = _period(window.length_s)
            if unit == "tokens" and reserve > window.limit:
                message = (
                    f"This request reserves {reserve} tokens (prompt estimate plus max_tokens), more than "
                    f"the limit of {window.limit} tokens per {per}; lower max_tokens."
                )
            else:
                message = f"Rate limit reached for {unit}: {window.limit} per {per}."
        message += f" Retry after {retry} s."
        # lower case, as ASGI sends names: a caller merging its own "retry-after" must not add a second one
        headers["retry-after"] = str(retry)
        return RateLimited(outcome.failed or "requests", retry, headers, message)

    # --- settle and leases -------------------------------------------------------------------

    async def _settle(
        self, store: Store, base: str, plan: Plan, lease_id: str | None, starts: tuple[int, ...], delta: int
    ) -> None:
        if lease_id is not None and plan.concurrency:
            by_base = self._held.get(store, {})
            ids = by_base.get(base)
            if ids is not None:
                ids.discard(lease_id)
                if not ids:
                    del by_base[base]
        # No lease and no refund: nothing to do. The undo marker is left to its TTL: an undo only ever follows
        # an admission whose reply was lost, and such an admission is never settled.
        if not (plan.concurrency or delta):
            return
        if not store.suspends:  # in-process: nothing to interrupt, no task needed
            await self._settle_quietly(store, base, plan, lease_id, starts, delta)
            return
        # shielded: a second cancellation of the caller (client gone) must not abort the refund
        await asyncio.shield(self._spawn(self._settle_quietly(store, base, plan, lease_id, starts, delta)))

    async def _settle_quietly(
        self, store: Store, base: str, plan: Plan, lease_id: str | None, starts: tuple[int, ...], delta: int
    ) -> None:
        try:
            await store.settle(base, plan, lease_id, delta, starts)
        except _STORAGE_ERRORS as exc:
            # An unrefunded reservation only over-charges this window, but a lease left behind would
            # block the client's slot until its TTL: it is freed in the background once Redis answers.
            self._storage_failed(exc, "settle")
            if lease_id is not None and plan.concurrency and store.undoable:
                self._schedule_release(store, base, plan, lease_id)

    def _spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _ensure_heartbeat(self) -> None:
        if self._heartbeat is None or self._heartbeat.done():
            self._heartbeat = asyncio.get_running_loop().create_task(self._beat())

    async def _beat(self) -> None:
        # the flag, not only cancel(), ends the loop: a cancel swallowed by the client must not hang aclose
        while not self._closed:
            await asyncio.sleep(self._config.heartbeat_s)
            await self.refresh_leases()

    async def refresh_leases(self) -> None:
        """Extend every lease this replica holds (the heartbeat does this every ``lease_ttl_s / 3``)."""
        for store, by_base in list(self._held.items()):
            for base, ids in list(by_base.items()):
                if not ids:
                    continue
                try:
                    await store.refresh(base, tuple(ids), self._lease_ttl_ms)
                except _STORAGE_ERRORS as exc:
                    self._storage_failed(exc, "heartbeat")

    def _storage_failed(self, exc: BaseException, during: str) -> None:
        self._errors += 1
        self._down_until = time.monotonic() + self._config.probe_interval_s
        if not self._degraded:
            self._degraded = True
            # the class name only: messages can carry host names, never anything secret but keep it short
            log.warning("rate limiter storage failed during %s (%s); degraded", during, type(exc).__name__)

    async def aclose(self) -> None:
        """Stop the heartbeat, wait for pending settles and (briefly) undos, close the storage."""
        self._closed = True
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
            self._heartbeat = None
        while self._tasks:  # bounded by the command timeout; an admission ending now may add an undo
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._undos:
            # an undo may retry for seconds against a sick Redis: give it one attempt's time, then drop
            # it (counted and logged) rather than hold up the shutdown
            _, pending = await asyncio.wait(set(self._undos), timeout=CANCEL_TIMEOUT_S)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self._shared.aclose()


def _reset_key(state: WindowState) -> int:
    return state.reset_ms


def _period(length_s: int) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if length_s % size == 0:
            count = length_s // size
            return unit if count == 1 else f"{count} {unit}s"
    return f"{length_s} seconds"
