"""In-process storage: the embedded default, and the fail_open fallback when Redis is down.

Each method runs without awaiting, so it is atomic on the event loop. Time is the monotonic clock,
which a wall-clock change cannot move. Expired windows and leases are swept at most once a second,
so memory stays bounded by the clients active in the longest window.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection

from ._plan import FAILED_KINDS, Outcome, Plan, WindowState
from ._store import lease_key, token_key

_SWEEP_EVERY_MS = 1000


def _monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


class MemoryStore:
    suspends = False  # does admit() await I/O (and so can be interrupted)?
    undoable = False  # an in-process admission cannot lose its reply: no markers, nothing to cancel
    kind = "memory"

    def __init__(self, clock_ms: Callable[[], int] = _monotonic_ms) -> None:
        self._clock = clock_ms
        self._windows: dict[str, list[int]] = {}  # key -> [count, start ms, end ms]
        self._leases: dict[str, dict[str, int]] = {}  # key -> {lease id: expiry ms}
        self._next_expiry: dict[str, int] = {}  # key -> lower bound of its earliest lease expiry
        self._next_sweep = 0

    def __len__(self) -> int:
        """Live entries (windows + lease sets), for tests and metrics."""
        return len(self._windows) + len(self._leases)

    async def admit(self, base: str, plan: Plan, tokens: int, lease_id: str, lease_ttl_ms: int) -> Outcome:
        now = self._clock()
        if now >= self._next_sweep:
            self._sweep(now)
        windows = self._windows
        # phase 1: check every window without writing (so a refusal charges nothing)
        found: list[list[int] | None] = []
        failed = 0
        retry = 0
        for slot in plan.slots:
            entry = windows.get(base + slot.suffix)
            if entry is not None and now >= entry[2]:
                entry = None
            found.append(entry)
            count, start = (entry[0], entry[1]) if entry is not None else (0, now)
            cost = 1 if slot.kind == 1 else tokens
            limit = slot.window.limit
            if count + cost > limit or count >= limit:
                failed = slot.kind if failed == 0 else min(failed, slot.kind)
                retry = max(retry, start + slot.length_ms - now)

        in_flight = 0
        if plan.concurrency:
            lkey = base + "c"
            leases = self._leases.get(lkey)
            if leases:
                if now >= self._next_expiry.get(lkey, 0):  # scan only when a lease may have expired
                    for held in [h for h, expiry in leases.items() if expiry <= now]:
                        del leases[held]
                    self._next_expiry[lkey] = min(leases.values(), default=now + lease_ttl_ms)
                in_flight = len(leases)
            if in_flight >= plan.concurrency and failed == 0:
                failed = 3
            elif failed == 0:
                if leases is None:
                    leases = self._leases[lkey] = {}
                leases[lease_id] = now + lease_ttl_ms
                self._next_expiry.setdefault(lkey, now + lease_ttl_ms)
                in_flight += 1

        # phase 2: charge (only when everything passed) and report
        states: list[WindowState] = []
        for slot, entry in zip(plan.slots, found, strict=True):
            if failed == 0:
                cost = 1 if slot.kind == 1 else tokens
                if entry is None:
                    entry = windows[base + slot.suffix] = [cost, now, now + slot.length_ms]
                else:
                    entry[0] += cost
            count, start = (entry[0], entry[1]) if entry is not None else (0, now)
            states.append(
                WindowState(
                    slot.window, max(slot.window.limit - count, 0), start + slot.length_ms - now, start
                )
            )
        nreq = len(plan.requests)
        return Outcome(
            failed == 0, FAILED_KINDS[failed], retry, in_flight, tuple(states[:nreq]), tuple(states[nreq:])
        )

    async def settle(
        self, base: str, plan: Plan, lease_id: str | None, token_delta: int, starts: tuple[int, ...]
    ) -> None:
        if lease_id is not None:
            lkey = lease_key(base)
            leases = self._leases.get(lkey)
            if leases is not None:
                leases.pop(lease_id, None)
                if not leases:
                    del self._leases[lkey]  # as Redis drops an empty sorted set
                    self._next_expiry.pop(lkey, None)
        if token_delta:
            now = self._clock()
            for window, start in zip(plan.tokens, starts, strict=True):
                entry = self._windows.get(token_key(base, window.length_s))
                # only the window the reservation was taken in; a restarted window is not touched
                if entry is not None and entry[1] == start and now < entry[2]:
                    entry[0] = max(entry[0] + token_delta, 0)

    async def cancel(self, base: str, plan: Plan, lease_id: str) -> bool:
        return False

    async def refresh(self, base: str, lease_ids: Collection[str], lease_ttl_ms: int) -> None:
        leases = self._leases.get(lease_key(base))
        if leases:
            expiry = self._clock() + lease_ttl_ms
            for held in lease_ids:
                if held in leases:
                    leases[held] = expiry

    async def ping(self) -> bool:
        return True

    async def warm_up(self, timeout_s: float) -> bool:
        return True

    async def aclose(self) -> None:
        self._windows.clear()
        self._leases.clear()
        self._next_expiry.clear()

    def _sweep(self, now: int) -> None:
        self._next_sweep = now + _SWEEP_EVERY_MS
        for key in [k for k, entry in self._windows.items() if entry[2] <= now]:
            del self._windows[key]
        for key, leases in list(self._leases.items()):
            for held in [h for h, expiry in leases.items() if expiry <= now]:
                del leases[held]
            if not leases:
                del self._leases[key]
                self._next_expiry.pop(key, None)
