"""Behaviour of the limiter, run once per storage (memory and Redis) by the ``backend`` fixture."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from gateway.policy.sections import TierLimits
from gateway.ratelimit import Admission, RateLimited, RateLimiter
from gateway.ratelimit._redis import UNDO_TTL_FLOOR_MS
from tests.support.ratelimit import Backend

MakeLimiter = Callable[..., Awaitable[RateLimiter]]


async def admit_or_none(
    limiter: RateLimiter, limits: TierLimits, reserve: int = 0, client: str = "alice"
) -> Admission | RateLimited:
    try:
        return await limiter.admit(client, limits, reserve, "fail_closed")
    except RateLimited as exc:
        return exc


async def test_requests_exact_under_concurrency(make_limiter: MakeLimiter) -> None:
    limiter = await make_limiter()
    limits = TierLimits(requests="10/hour")
    results = await asyncio.gather(*(admit_or_none(limiter, limits) for _ in range(20)))
    admitted = [r for r in results if isinstance(r, Admission)]
    refused = [r for r in results if isinstance(r, RateLimited)]
    assert len(admitted) == 10
    assert len(refused) == 10
    for exc in refused:
        assert exc.limit == "requests"
        assert 0 < exc.retry_after_s <= 3600
        assert exc.headers["retry-after"] == str(exc.retry_after_s)
        assert exc.headers["x-ratelimit-remaining-requests"] == "0"
        assert "10 per hour" in exc.message


async def test_multi_window_refusal_leaves_no_partial_charge(make_limiter: MakeLimiter) -> None:
    limiter = await make_limiter()
    both = TierLimits(requests="5/minute;3/hour")
    for _ in range(3):
        await limiter.admit("alice", both, 0, "fail_closed")
    for _ in range(2):
        with pytest.raises(RateLimited) as info:
            await limiter.admit("alice", both, 0, "fail_closed")
        assert "3 per hour" in info.value.message
    # the minute window was charged only by the 3 admitted requests, not by the 2 refused ones
    minute = await limiter.admit("alice", TierLimits(requests="5/minute"), 0, "fail_closed")
    assert minute.headers["x-ratelimit-remaining-requests"] == "1"


async def test_token_refusal_charges_no_request(make_limiter: MakeLimiter) -> None:
    limiter = await make_limiter()
    limits = TierLimits(requests="10/minute", tokens="1000/minute")
    await limiter.admit("alice", limits, 600, "fail_closed")
    with pytest.raises(RateLimited) as info:
        await limiter.admit("alice", limits, 600, "fail_closed")
    assert info.value.limit == "tokens"
    assert info.value.headers["x-ratelimit-remaining-tokens"] == "400"
    after = await limiter.admit("alice", limits, 100, "fail_closed")
    assert after.headers["x-ratelimit-remaining-requests"] == "8"
    assert after.headers["x-ratelimit-remaining-tokens"] == "300"


async def test_concurrency_refusal_charges_nothing(make_limiter: MakeLimiter) -> None:
    limiter = await make_limiter()
    limits = TierLimits(requests="10/minute", tokens="1000/minute", concurrency=1)
    first = await limiter.admit("alice", limits, 100, "fail_closed")
    with pytest.raises(RateLimited) as info:
        await limiter.admit("alice", limits, 100, "fail_closed")
    assert info.value.limit == "concurrency"
    assert info.value.retry_after_s == 1
    await first.settle(100)
    third = await limiter.admit("alice", limits, 100, "fail_closed")
    assert third.headers["x-ratelimit-remaining-requests"] == "8"
    assert third.headers["x-ratelimit-remaining-tokens"] == "800"
    assert third.outcome is not None
    assert third.outcome.in_flight == 1


async def test_reservation_refunded_to_real_usage(make_limiter: MakeLimiter) -> None:
    limiter = await make_limiter()
    limits = TierLimits(tokens="1000/hour")
    admission = await limiter.admit("alice", limits, 500, "fail_closed")
    assert admission.headers["x-ratelimit-remaining-tokens"] == "500"
    await admission.settle(120)
    probe = await limiter.admit("alice", limits, 1, "fail_closed")
    assert probe.headers["x-ratelimit-remaining-tokens"] == str(1000 - 120 - 1)


async def test_usage_beyond_reservation_is_charged(make_limiter: MakeLimiter) -> None:
    limiter = await make_limiter()
    limits = TierLimits(tokens="1000/hour")
    admission = await limiter.admit("alice", limits, 100, "fail_closed")
    await admission.settle(300)
    probe = await limiter.admit("alice", limits, 1, "fail_closed")
    assert probe.headers["x-ratelimit-remaining-tokens"] == str(1000 - 300 - 1)


async def test_settle_is_idempotent(make_limiter: MakeLimiter) -> None:
    limiter = await make_limiter()
    limits = TierLimits(tokens="1000/hour", concurrency=2)
    a = await limiter.admit("alice", limits, 400, "fail_closed")
    b = await limiter.admit("alice", limits, 400, "fail_closed")
    await a.settle(100)
    await a.settle(0)  # a second settle must neither refund again nor free b's slot
    assert a.settled
    probe = await limiter.admit("alice", limits, 1, "fail_closed")
    assert probe.headers["x-ratelimit-remaining-tokens"] == str(1000 - 100 - 400 - 1)
    assert probe.outcome is not None
    assert probe.outcome.in_flight == 2
    await b.settle(400)
    await probe.settle(1)
    assert limiter.status().leases_held == 0


async def test_oversized_reservation_is_refused_and_named(make_limiter: MakeLimiter) -> None:
    limiter = await make_limiter()
    with pytest.raises(RateLimited) as info:
        await limiter.admit("alice", TierLimits(tokens="1000/minute"), 2000, "fail_closed")
    assert info.value.limit == "tokens"
    assert "lower max_tokens" in info.value.message
    assert info.value.retry_after_s >= 0
    # and nothing was charged
    ok = await limiter.admit("alice", TierLimits(tokens="1000/minute"), 1000, "fail_closed")
    assert ok.headers["x-ratelimit-remaining-tokens"] == "0"


async def _request(
    limiter: RateLimiter, limits: TierLimits, path: str, rng: random.Random, midway: asyncio.Event
) -> str:
    """One request through the app's shape: admit, stream, settle in ``finally`` on every path."""
    try:
        admission = await limiter.admit(f"c{rng.randrange(3)}", limits, 50, "fail_closed")
    except RateLimited:
        midway.set()
        return "refused"
    generated = 0
    try:
        for _ in range(rng.randrange(1, 4)):
            await asyncio.sleep(0)
            generated += 7
            if path == "error":
                raise RuntimeError("upstream failed")
            if path == "guardrail":
                return "stopped"  # a guardrail stop ends the stream early
            if path == "disconnect":
                midway.set()
                await asyncio.sleep(60)  # cancelled here, like a client that went away mid-stream
        return "ok"
    finally:
        await admission.settle(generated)


async def test_slots_released_on_every_path(make_limiter: MakeLimiter, backend: Backend) -> None:
    limiter = await make_limiter()
    limits = TierLimits(concurrency=4, tokens="100000000/hour")
    rng = random.Random(7)
    paths = ["ok", "error", "guardrail", "disconnect", "cancel-at-admission"]
    outcomes: dict[str, int] = {}
    for _ in range(50):  # 50 batches of 20 = 1,000 mixed requests
        batch = [rng.choice(paths) for _ in range(20)]
        events = [asyncio.Event() for _ in batch]
        tasks = [
            asyncio.create_task(_request(limiter, limits, path, rng, event))
            for path, event in zip(batch, events, strict=True)
        ]
        await asyncio.sleep(0)
        for path, task, event in zip(batch, tasks, events, strict=True):
            if path == "disconnect":
                await event.wait()
            if path in ("disconnect", "cancel-at-admission"):
                task.cancel()
        for result in await asyncio.gather(*tasks, return_exceptions=True):
            key = type(result).__name__ if isinstance(result, BaseException) else str(result)
            outcomes[key] = outcomes.get(key, 0) + 1
    assert sum(outcomes.values()) == 1000
    for seen in ("CancelledError", "RuntimeError", "ok", "stopped", "refused"):
        assert outcomes.get(seen, 0) > 0, outcomes
    await asyncio.sleep(0.05)  # releases of admissions whose caller was cancelled mid-call
    assert limiter.status().leases_held == 0
    for client in ("c0", "c1", "c2"):
        probe = await limiter.admit(client, limits, 0, "fail_closed")
        assert probe.outcome is not None
        assert probe.outcome.in_flight == 1
        await probe.settle(0)
    assert not [k for k in await backend.ttls() if k.endswith(":c")]  # empty lease sets are gone


async def test_heartbeat_keeps_a_long_request_alive(make_limiter: MakeLimiter) -> None:
    limiter = await make_limiter(lease_ttl_s=1.0)
    limits = TierLimits(concurrency=1)
    held = await limiter.admit("alice", limits, 0, "fail_closed")
    await asyncio.sleep(1.6)  # longer than the TTL: only the heartbeat keeps the lease
    with pytest.raises(RateLimited):
        await limiter.admit("alice", limits, 0, "fail_closed")
    await held.settle(0)
    again = await limiter.admit("alice", limits, 0, "fail_closed")
    await again.settle(0)


async def test_headers_on_success(make_limiter: MakeLimiter) -> None:
    limiter = await make_limiter()
    limits = TierLimits(requests="10/minute;100/day", tokens="1000/minute")
    h = (await limiter.admit("alice", limits, 250, "fail_closed")).headers
    assert h["x-ratelimit-limit-requests"] == "10"
    assert h["x-ratelimit-remaining-requests"] == "9"
    assert h["x-ratelimit-reset-requests"] in {"1m0s", "59s"}
    assert h["x-ratelimit-limit-tokens"] == "1000"
    assert h["x-ratelimit-remaining-tokens"] == "750"
    assert h["RateLimit-Limit"] == "10"
    assert h["RateLimit-Remaining"] == "9"
    assert h["RateLimit-Reset"] in {"59", "60"}
    assert h["RateLimit-Policy"] == "10;w=60, 100;w=86400"
    assert "retry-after" not in {k.lower() for k in h}


async def test_no_limits_no_charge(make_limiter: MakeLimiter) -> None:
    admission = await (await make_limiter()).admit("alice", TierLimits(), 10**9, "fail_closed")
    assert admission.headers == {}
    await admission.settle(5)


async def test_clients_are_independent_and_ids_are_safe(make_limiter: MakeLimiter) -> None:
    limiter = await make_limiter()
    limits = TierLimits(requests="1/hour")
    await limiter.admit("a{b}", limits, 0, "fail_closed")
    with pytest.raises(RateLimited):
        await limiter.admit("a{b}", limits, 0, "fail_closed")
    for other in ("ab", "a{b}x", "bob"):
        await limiter.admit(other, limits, 0, "fail_closed")


async def test_window_resets(make_limiter: MakeLimiter) -> None:
    limiter = await make_limiter()
    limits = TierLimits(requests="2/second")
    await limiter.admit("alice", limits, 0, "fail_closed")
    await limiter.admit("alice", limits, 0, "fail_closed")
    with pytest.raises(RateLimited) as info:
        await limiter.admit("alice", limits, 0, "fail_closed")
    assert info.value.retry_after_s == 1
    await asyncio.sleep(1.05)
    await limiter.admit("alice", limits, 0, "fail_closed")


@pytest.mark.parametrize("skew_s", [30, -30])
async def test_replica_clock_skew_changes_nothing(make_limiter: MakeLimiter, skew_s: int) -> None:
    limiter = await make_limiter()
    limits = TierLimits(requests="3/minute", tokens="100/minute")
    first = await limiter.admit("alice", limits, 10, "fail_closed")
    with time_machine.travel(datetime.now(UTC) + timedelta(seconds=skew_s)):
        second = await limiter.admit("alice", limits, 10, "fail_closed")
        await limiter.admit("alice", limits, 10, "fail_closed")
        with pytest.raises(RateLimited) as info:
            await limiter.admit("alice", limits, 10, "fail_closed")
    assert second.headers["x-ratelimit-remaining-requests"] == "1"
    assert second.headers["x-ratelimit-remaining-tokens"] == "80"
    # the window still resets a minute after the first hit, whatever this replica's clock says
    assert abs(int(second.headers["RateLimit-Reset"]) - int(first.headers["RateLimit-Reset"])) <= 1
    assert 55 <= info.value.retry_after_s <= 60


async def test_every_key_carries_a_ttl(make_limiter: MakeLimiter, backend: Backend) -> None:
    limiter = await make_limiter(lease_ttl_s=20.0)
    limits = TierLimits(requests="5/minute", tokens="100/hour", concurrency=2)
    held = []
    for i in range(300):
        admission = await limiter.admit(f"many-{i}", limits, 10, "fail_closed")
        if i % 10 == 0:
            held.append(admission)  # still in flight: its lease set must carry a TTL too
        else:
            await admission.settle(5)
    ttls = await backend.ttls()
    if backend.kind == "redis":
        # request and token window per client; open lease sets and undo markers of the held admissions
        # (settled ones deleted theirs)
        assert len(ttls) == 300 * 2 + 2 * len(held)
        for key, ttl in ttls.items():
            bound = {"r": 60_000, "t": 3_600_000, "c": 20_000, "u": 20_000}[key.rsplit("}:", 1)[1][0]]
            assert 0 < ttl <= bound, key
    else:
        assert limiter.status().local_entries == 300 * 2 + len(held)
    for admission in held:
        await admission.settle(5)


async def test_a_flood_of_clients_leaves_bounded_memory(make_limiter: MakeLimiter, backend: Backend) -> None:
    limiter = await make_limiter()
    limits = TierLimits(requests="5/second")
    for chunk in range(40):
        admitted = await asyncio.gather(
            *(limiter.admit(f"flood-{chunk}-{i}", limits, 0, "fail_closed") for i in range(50))
        )
        for admission in admitted:
            await admission.settle(0)  # as every request does
    await asyncio.sleep(1.1)  # every flood window has ended
    late = await limiter.admit("late", limits, 0, "fail_closed")  # also triggers the memory store's sweep
    await late.settle(0)
    if backend.kind == "redis":
        ttls = await backend.ttls()
        # a request-only admission leaves its undo marker to expire (settling it would cost a round trip)
        markers = {k: ttl for k, ttl in ttls.items() if ":u:" in k}
        undo_ttl_ms = max(limiter._config.lease_ttl_s * 1000, UNDO_TTL_FLOOR_MS)
        assert all(0 < ttl <= undo_ttl_ms for ttl in markers.values())
        assert sorted(set(ttls) - set(markers)) == [f"{backend.prefix}{{late}}:r:1"]
    else:
        assert limiter.status().local_entries == 1
