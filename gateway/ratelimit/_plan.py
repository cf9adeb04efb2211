"""Compiled limits of one tier or client, and the outcome of one atomic admission.

Rate strings use the `limits` notation (``60/minute;1000/day``) and are parsed by `limits`.
A plan is compiled once per distinct TierLimits and reused; nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from limits import parse_many

from gateway.policy.sections import TierLimits

from ._errors import LimitName


@dataclass(slots=True, frozen=True)
class Window:
    """``limit`` units per ``length_s`` seconds; the window starts at its first hit."""

    limit: int
    length_s: int


class Slot(NamedTuple):
    """One window as a storage sees it: key suffix, limit, length in ms, and 1 requests / 2 tokens."""

    suffix: str
    window: Window
    length_ms: int
    kind: int


@dataclass(slots=True, frozen=True)
class Plan:
    requests: tuple[Window, ...]
    tokens: tuple[Window, ...]
    concurrency: int  # 0 = unlimited
    slots: tuple[Slot, ...] = ()  # request windows first, then token windows

    @property
    def empty(self) -> bool:
        return not (self.requests or self.tokens or self.concurrency)


# NamedTuples: built on every admission, and much cheaper to build than frozen dataclasses
class WindowState(NamedTuple):
    """One window after the admission: what is left, when it resets, and its identity (start)."""

    window: Window
    remaining: int
    reset_ms: int
    start: int


class Outcome(NamedTuple):
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
    requests, tokens = parse_windows(limits.requests), parse_windows(limits.tokens)
    slots = tuple(Slot(f"r:{w.length_s}", w, w.length_s * 1000, 1) for w in requests)
    slots += tuple(Slot(f"t:{w.length_s}", w, w.length_s * 1000, 2) for w in tokens)
    return Plan(requests, tokens, limits.concurrency or 0, slots)
