"""Undo of a Redis admission whose reply was lost (lua/cancel.lua), at the storage level on real Redis.

Each admission leaves an undo marker (its window starts and tokens); settle deletes it; cancel gives
the charge back through it, or leaves a tombstone that makes a late admission charge nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.policy.sections import TierLimits
from gateway.ratelimit import RateLimitConfig
from gateway.ratelimit._memory import MemoryStore
from gateway.ratelimit._plan import Outcome, Plan, compile_plan
from gateway.ratelimit._redis import UNDO_TTL_FLOOR_MS, RedisStore
from gateway.ratelimit._store import AdmissionCancelled, client_base, lease_key, undo_key
from tests.support.redis import REDIS_URL, RedisProxy, redis_keys, redis_state

pytestmark = pytest.mark.redis

PLAN = compile_plan(TierLimits(requests="10/minute;100/hour", tokens="1000/minute", concurrency=3))
LEASE_TTL_MS = 30_000


@pytest.fixture
async def store(prefix: str) -> AsyncIterator[RedisStore]:
    s = redis_store(REDIS_URL, prefix)
    assert await s.warm_up(2.0)
    yield s
    await s.aclose()


def redis_store(url: str, prefix: str, **config: float) -> RedisStore:
    config.setdefault("command_timeout_ms", 1000)  # roomy: a shared 2-core box
    return RedisStore(RateLimitConfig(redis_url=url, key_prefix=prefix, **config))


def starts(outcome: Outcome) -> tuple[int, ...]:
    return tuple(s.start for s in outcome.tokens)


async def admit(store: RedisStore, base: str, tokens: int, lease_id: str, plan: Plan = PLAN) -> Outcome:
    outcome = await store.admit(base, plan, tokens, lease_id, LEASE_TTL_MS)
    assert outcome.admitted
    return outcome


async def test_an_admission_whose_reply_is_lost_is_undone_exactly(prefix: str) -> None:
    proxy = await RedisProxy().start()
    # no allowance: Redis answers the health probe, so a late reply would otherwise be waited for
    store = redis_store(proxy.url, prefix, command_timeout_ms=200, loop_lag_allowance_ms=0)
    try:
        assert await store.warm_up(2.0)
        base = client_base(prefix, "alice")
        await admit(store, base, 300, "held")  # traffic before: one admission in flight, one settled
        done = await admit(store, base, 200, "done")
        await store.settle(base, PLAN, "done", -150, starts(done))
        before = await redis_state(prefix)

        proxy.delay_next_reply(0.6)  # Redis runs the script; its answer comes after the timeout
        with pytest.raises((TimeoutError, RedisTimeoutError)):
            await store.admit(base, PLAN, 100, "lost", LEASE_TTL_MS)
        charged = await redis_state(prefix)
        for length in (60, 3600):
            assert charged[f"{base}r:{length}"]["n"] == "3"  # type: ignore[index]
        assert charged[f"{base}t:60"]["n"] == str(300 + 50 + 100)  # type: ignore[index]
        assert charged[lease_key(base)] == ["held", "lost"]
        marker = str(charged[undo_key(base, "lost")]).split()
        assert marker[0] == "100" and len(marker) == 1 + len(PLAN.slots)

        assert await store.cancel(base, PLAN, "lost") is True
        assert await redis_state(prefix) == before  # counts, tokens, lease: as if it never ran
    finally:
        await store.aclose()
        await proxy.close()


async def test_undoing_the_first_admission_leaves_nothing(store: RedisStore, prefix: str) -> None:
    base = client_base(prefix, "bob")
    await admit(store, base, 100, "only")  # its reply is "lost": the caller never uses it
    assert len(await redis_state(prefix)) == 5  # two request windows, a token window, lease, marker
    assert await store.cancel(base, PLAN, "only") is True
    # the windows it opened are gone (back at 0), so the next request opens them afresh
    assert await redis_state(prefix) == {}


async def test_a_cancel_that_overtakes_its_admission_makes_it_charge_nothing(
    store: RedisStore, prefix: str
) -> None:
    base = client_base(prefix, "alice")
    await admit(store, base, 100, "earlier")
    before = await redis_state(prefix)
    assert await store.cancel(base, PLAN, "late") is False  # nothing to undo yet: a tombstone
    with pytest.raises(AdmissionCancelled):
        await store.admit(base, PLAN, 100, "late", LEASE_TTL_MS)
    after = await redis_state(prefix)
    assert after.pop(undo_key(base, "late")) == "x"
    assert after == before
    # only that admission: the next one is charged as usual
    nxt = await admit(store, base, 100, "next")
    assert nxt.requests[0].remaining == 8 and nxt.in_flight == 2


async def test_settle_deletes_the_marker_so_a_later_cancel_changes_nothing(
    store: RedisStore, prefix: str
) -> None:
    base = client_base(prefix, "alice")
    outcome = await admit(store, base, 400, "a")
    assert undo_key(base, "a") in await redis_state(prefix)
    await store.settle(base, PLAN, "a", -250, starts(outcome))
    settled = await redis_state(prefix)
    assert undo_key(base, "a") not in settled
    assert lease_key(base) not in settled  # its only lease freed: the set is gone

    assert await store.cancel(base, PLAN, "a") is False
    after = await redis_state(prefix)
    assert after.pop(undo_key(base, "a")) == "x"  # a harmless tombstone, with a TTL
    assert after == settled


async def test_a_retried_cancel_gives_back_nothing_twice(store: RedisStore, prefix: str) -> None:
    base = client_base(prefix, "alice")
    await admit(store, base, 100, "a")
    await admit(store, base, 200, "b")
    assert await store.cancel(base, PLAN, "a") is True
    once = await redis_state(prefix)
    assert await store.cancel(base, PLAN, "a") is False  # e.g. a retry after its first reply was lost
    twice = await redis_state(prefix)
    assert twice.pop(undo_key(base, "a")) == "x"
    assert twice == once
    assert once[f"{base}r:60"]["n"] == "1"  # type: ignore[index]
    assert once[f"{base}t:60"]["n"] == "200"  # type: ignore[index]
    assert once[lease_key(base)] == ["b"]


async def test_a_window_that_restarted_since_is_not_touched(store: RedisStore, prefix: str) -> None:
    plan = compile_plan(TierLimits(requests="5/second", tokens="1000/second"))
    base = client_base(prefix, "alice")
    await admit(store, base, 100, "old", plan)
    await asyncio.sleep(1.05)  # both windows end; the next admission opens new ones
    await admit(store, base, 70, "new", plan)
    assert await store.cancel(base, plan, "old") is True  # its marker outlives its windows
    state = await redis_state(prefix)
    assert state[f"{base}r:1"]["n"] == "1"  # type: ignore[index]
    assert state[f"{base}t:1"]["n"] == "70"  # type: ignore[index]


async def test_markers_and_tombstones_carry_ttls(prefix: str) -> None:
    base = client_base(prefix, "alice")
    for lease_ttl_s, bound in ((30.0, 30_000), (1.0, UNDO_TTL_FLOOR_MS)):  # never under the floor
        store = redis_store(REDIS_URL, prefix, lease_ttl_s=lease_ttl_s)
        try:
            await admit(store, base, 10, f"marker-{bound}")
            await store.cancel(base, PLAN, f"tombstone-{bound}")
            ttls = await redis_keys(prefix)
            for kind in ("marker", "tombstone"):
                assert bound - 2000 < ttls[undo_key(base, f"{kind}-{bound}")] <= bound
        finally:
            await store.aclose()
    assert all(ttl > 0 for ttl in (await redis_keys(prefix)).values())


async def test_the_memory_store_has_nothing_to_undo() -> None:
    store = MemoryStore()
    assert not store.undoable
    outcome = await store.admit("m:", PLAN, 10, "x", LEASE_TTL_MS)
    assert outcome.admitted
    assert await store.cancel("m:", PLAN, "x") is False
    assert len(store) == 4  # the admission stands: it cannot have lost its reply
