"""Attempt limits of ``POST /oauth/token``: every attempt may cost an argon2 hash (deliberately slow).

Two moving windows over the ``limits`` library's in-process memory storage:

- per remote address, every attempt, counted before the body is read: bounds the CPU one source can
  spend (IPv6 addresses count per /64, which one host usually owns whole);
- per client id, failed attempts only: bounds guessing of one client's secret from many addresses.
  Each attempt takes a slot *before* its secret is hashed, in one step with the check (no await in
  between), and gives it back only when the secret was right: attempts in flight count as failures,
  so parallel requests cannot pass the check together. A client whose window is full is refused even
  with the right secret until the window moves on: the price of not hashing for an attacker.

The state is per process on purpose: it guards this process's CPU, and needs no Redis to work.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import math
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter

ThrottleScope = Literal["address", "client"]


@dataclass(frozen=True, slots=True)
class Throttled:
    """An attempt refused; ``retry_after_s`` is when the window frees a slot (at least 1 s)."""

    scope: ThrottleScope
    retry_after_s: int


def address_key(host: str | None) -> str:
    """The bucket of a remote address: IPv4 as is, IPv6 by its /64, anything else as one bucket."""
    if not host:
        return "unknown"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def presented_client_id(form: Mapping[str, list[str]], headers: Mapping[str, str]) -> str | None:
    """The client id the request claims (Basic header first, then the form); None when absent or garbled."""
    authorization = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
    scheme, _, credentials = authorization.strip().partition(" ")
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, sep, _secret = decoded.partition(":")
        # RFC 6749 §2.3.1: the id is form-urlencoded inside the Basic credentials.
        return unquote(user.replace("+", " ")) if sep and user else None
    values = form.get("client_id") or []
    return values[0] if len(values) == 1 and values[0] else None


def _client_key(client_id: str) -> str:
    # Hashed: attacker-chosen ids of any length and alphabet become fixed-size keys.
    return hashlib.sha256(client_id.encode("utf-8", "replace")).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Attempt:
    """A failure slot taken for one attempt; ``key`` None when the request named no client."""

    key: str | None
    at: float


class _SlidingLog:
    """At most ``limit`` entries per key within ``window_s``: a log of their times.

    Entries expire as the window moves; an emptied key is forgotten. Keys are swept whole when there
    are many, so that attacker-chosen ids cannot grow the table without bound.
    """

    _SWEEP_AT = 10_000

    def __init__(self, limit: int, window_s: int) -> None:
        self.limit = limit
        self.window_s = window_s
        self._log: dict[str, deque[float]] = {}

    def take(self, key: str, now: float) -> float | None:
        """Add an entry at ``now``; None when it fit, else the seconds until one expires."""
        if len(self._log) >= self._SWEEP_AT:
            self._sweep(now)
        entries = self._log.setdefault(key, deque())
        self._expire(entries, now)
        if len(entries) >= self.limit:
            return entries[0] + self.window_s - now
        entries.append(now)
        return None

    def give_back(self, key: str, at: float) -> None:
        entries = self._log.get(key)
        if entries is not None and at in entries:
            entries.remove(at)
            if not entries:
                del self._log[key]

    def clear(self) -> None:
        self._log.clear()

    def _expire(self, entries: deque[float], now: float) -> None:
        while entries and entries[0] <= now - self.window_s:
            entries.popleft()

    def _sweep(self, now: float) -> None:
        for key in list(self._log):
            self._expire(self._log[key], now)
            if not self._log[key]:
                del self._log[key]


class TokenThrottle:
    """Per-address and per-client-id attempt limits of the token endpoint (one per issuer)."""

    def __init__(self, *, per_address: str, per_client_failures: str) -> None:
        self.per_address: RateLimitItem = parse(per_address)
        self.per_client_failures: RateLimitItem = parse(per_client_failures)
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._failures = _SlidingLog(self.per_client_failures.amount, self.per_client_failures.get_expiry())

    async def _retry_after(self, item: RateLimitItem, *ids: str) -> int:
        stats = await self._limiter.get_window_stats(item, *ids)
        return max(1, math.ceil(stats.reset_time - time.time()))

    async def admit_address(self, host: str | None) -> Throttled | None:
        """Count one attempt from ``host``; a Throttled when its window is full."""
        key = address_key(host)
        if await self._limiter.hit(self.per_address, "token-address", key):
            return None
        return Throttled("address", await self._retry_after(self.per_address, "token-address", key))

    def reserve_client(self, client_id: str | None) -> Throttled | Attempt:
        """Take one of ``client_id``'s failure slots for an attempt, or a Throttled when none is left.

        Synchronous on purpose: the check and the count cannot be split by another request.
        """
        if client_id is None:
            return Attempt(None, 0.0)
        key = _client_key(client_id)
        now = time.time()
        retry_after = self._failures.take(key, now)
        if retry_after is not None:
            return Throttled("client", max(1, math.ceil(retry_after)))
        return Attempt(key, now)

    def succeeded(self, attempt: Attempt) -> None:
        """The attempt's secret was right: its slot is given back."""
        if attempt.key is not None:
            self._failures.give_back(attempt.key, attempt.at)

    async def reset(self) -> None:
        """Forget every window (tests, or an operator's reload)."""
        await self._limiter.storage.reset()
        self._failures.clear()


__all__ = ["Attempt", "Throttled", "TokenThrottle", "address_key", "presented_client_id"]
