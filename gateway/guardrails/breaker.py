"""A circuit breaker for one guard: after repeated failures, stop calling and let ``on_error`` decide.

closed ──(``failures`` in a row)──► open ──(``cooldown_s`` later, one caller)──► half_open
half_open ──success──► closed;  half_open ──failure──► open (cool-down again)

Single event loop, no awaits inside: no lock is needed. The clock is injectable for tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

BreakerState = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    __slots__ = ("_clock", "_failures", "_opened_at", "_probing", "cooldown_s", "failures", "opened")

    def __init__(self, failures: int, cooldown_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.failures = failures
        self.cooldown_s = cooldown_s
        self.opened = 0  # times the breaker opened, for metrics
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return "closed"
        if self._probing or self._clock() - self._opened_at >= self.cooldown_s:
            return "half_open"
        return "open"

    def allow(self) -> bool:
        """May a call go out now? In half-open, only the first caller probes; the others are refused."""
        if self._opened_at is None:
            return True
        if self._probing or self._clock() - self._opened_at < self.cooldown_s:
            return False
        self._probing = True
        return True

    def success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._probing = False

    def abandon(self) -> None:
        """A call ended without an outcome (cancelled): a probe may go out again."""
        self._probing = False

    def failure(self) -> None:
        self._failures += 1
        if self._probing or (self._opened_at is None and self._failures >= self.failures):
            self._opened_at = self._clock()
            self.opened += 1
        self._probing = False


__all__ = ["BreakerState", "CircuitBreaker"]
