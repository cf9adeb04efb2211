"""In-process storage: the embedded default, and the fail_open fallback when Redis is down.

Each method runs without awaiting, so it is atomic on the event loop. Time is the monotonic clock,
which a wall-clock change cannot move. Expired windows and leases are swept at most once a second,
so memory stays bounded by the clients active in the longest window.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection

from ._plan import FAILED_KINDS, Outcome, Plan, Window, WindowState
from ._store import lease_key, request_key, token_key

_SWEEP_EVERY_MS = 1000


def _monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


class MemoryStore:
    suspends = False  # does admit() await I/O (and so can be interrupted)?
    kind = "memory"

    def __init__(self, clock_ms: Callable[[], int] = _monotonic_ms) -> None:
        self._clock = clock_ms
        self._windows: dict[str, list[int]] = {}  # key -> [count, start ms, end ms]
        self._leases: dict[str, dict[str, int]] = {}  # key -> {lease id: expiry ms}
        self._next_sweep = 0

    def __len__(self) -> int:
        """Live entries (windows + lease sets), for tests and metrics."""
        return len(self._windows) + len(self._leases)

    async def admit(self, base: str, plan: Plan, tokens: int, lease_id: str, lease_ttl_ms: int) -> Outcome:
        now = self._clock()
        self._maybe_sweep(now)
        # (key, window, cost, failure kind): request windows cost 1, token windows the reservation
        keyed: list[tuple[str, Window, int, int]] = [
            (request_key(base, w.length_s), w, 1, 1) for w in plan.requests
        ]
        keyed += [(token_key(base, w.length_s), w, tokens, 2) for w in plan.tokens]

        current: list[tuple[int, int]] = []
        failed = 0
        retry = 0
        for key, window, cost, kind in keyed:
            entry = self._windows.get(key)
            count, start = (entry[0], entry[1]) if entry is not None and now < entry[2] else (0, now)
            current.append((count, start))
            if count + cost > window.limit or count >= window.limit:
                failed = kind if failed == 0 else min(failed, kind)
                retry = max(retry, start + window.length_s * 1000 - now)

        in_flight = 0
        lkey = lease_key(base)
        if plan.concurrency:
            leases = self._leases.get(lkey)
            if leases:
                for held, expiry in list(leases.items()):
                    if expiry <= now:
                        del leases[held]
                in_flight = len(leases)
            if in_flight >= plan.concurrency and failed == 0:
                failed = 3

        admitted = failed == 0
        if admitted:
            for i, (key, window, cost, _) in enumerate(keyed):
                count, start = current[i]
                self._windows[key] = [count + cost, start, start + window.length_s * 1000]
                current[i] = (count + cost, start)
            if plan.concurrency:
                self._leases.setdefault(lkey, {})[lease_id] = now + lease_ttl_ms
                in_flight += 1

        states = tuple(
            WindowState(window, max(window.limit - count, 0), start + window.length_s * 1000 - now, start)
            for (_, window, _, _), (count, start) in zip(keyed, current, strict=True)
        )
        nreq = len(plan.requests)
        return Outcome(
            admitted=admitted,
            failed=FAILED_KINDS[failed],
            retry_ms=retry,
            in_flight=in_flight,
            requests=states[:nreq],
            tokens=states[nreq:],
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
        if token_delta:
            now = self._clock()
            for window, start in zip(plan.tokens, starts, strict=True):
                entry = self._windows.get(token_key(base, window.length_s))
                # only the window the reservation was taken in; a restarted window is not touched
                if entry is not None and entry[1] == start and now < entry[2]:
                    entry[0] = max(entry[0] + token_delta, 0)

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

    def _maybe_sweep(self, now: int) -> None:
        if now < self._next_sweep:
            return
        self._next_sweep = now + _SWEEP_EVERY_MS
        for key in [k for k, entry in self._windows.items() if entry[2] <= now]:
            del self._windows[key]
        for key, leases in list(self._leases.items()):
            for held in [h for h, expiry in leases.items() if expiry <= now]:
                del leases[held]
            if not leases:
                del self._leases[key]
