"""Compiled limits of one tier or client, and the outcome of one atomic admission.

Rate strings use the `limits` notation (``60/minute;1000/day``) and are parsed by `limits`.
A plan is compiled once per distinct TierLimits and reused; nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from limits import parse_many

from gateway.policy.sections import TierLimits

from ._errors import LimitName


@dataclass(slots=True, frozen=True)
class Window:
    """``limit`` units per ``length_s`` seconds; the window starts at its first hit."""

    limit: int
    length_s: int


@dataclass(slots=True, frozen=True)
class Plan:
    requests: tuple[Window, ...]
    tokens: tuple[Window, ...]
    concurrency: int  # 0 = unlimited

    @property
    def empty(self) -> bool:
        return not (self.requests or self.tokens or self.concurrency)


@dataclass(slots=True, frozen=True)
class WindowState:
    """One window after the admission: what is left, when it resets, and its identity (start)."""

    window: Window
    remaining: int
    reset_ms: int
    start: int


@dataclass(slots=True, frozen=True)
class Outcome:
    admitted: bool
    failed: LimitName | None
    retry_ms: int
    in_flight: int
    requests: tuple[WindowState, ...]
    tokens: tuple[WindowState, ...]


FAILED_KINDS: tuple[LimitName | None, ...] = (None, "requests", "tokens", "concurrency")


def parse_windows(rates: str | None) -> tuple[Window, ...]:
    """Parse ``60/minute;1000/day``; two rates with the same window length keep the stricter one."""
    if not rates:
        return ()
    by_length: dict[int, int] = {}
    for item in parse_many(rates):
        length = int(item.get_expiry())
        by_length[length] = min(item.amount, by_length.get(length, item.amount))
    return tuple(Window(limit, length) for length, limit in sorted(by_length.items()))


def compile_plan(limits: TierLimits) -> Plan:
    return Plan(parse_windows(limits.requests), parse_windows(limits.tokens), limits.concurrency or 0)
