"""Attempt limits of ``POST /oauth/token``: every attempt may cost an argon2 hash (deliberately slow).

Two moving windows over the ``limits`` library's in-process memory storage:

- per remote address, every attempt, counted before the body is read: bounds the CPU one source can
  spend (IPv6 addresses count per /64, which one host usually owns whole);
- per client id, failed attempts only, tested before the secret is verified: bounds guessing of one
  client's secret from many addresses. A client whose window is full is refused even with the right
  secret until the window moves on: the price of not hashing for an attacker.

The state is per process on purpose: it guards this process's CPU, and needs no Redis to work.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import math
import time
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


class TokenThrottle:
    """Per-address and per-client-id attempt limits of the token endpoint (one per issuer)."""

    def __init__(self, *, per_address: str, per_client_failures: str) -> None:
        self.per_address: RateLimitItem = parse(per_address)
        self.per_client_failures: RateLimitItem = parse(per_client_failures)
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    async def _retry_after(self, item: RateLimitItem, *ids: str) -> int:
        stats = await self._limiter.get_window_stats(item, *ids)
        return max(1, math.ceil(stats.reset_time - time.time()))

    async def admit_address(self, host: str | None) -> Throttled | None:
        """Count one attempt from ``host``; a Throttled when its window is full."""
        key = address_key(host)
        if await self._limiter.hit(self.per_address, "token-address", key):
            return None
        return Throttled("address", await self._retry_after(self.per_address, "token-address", key))

    async def admit_client(self, client_id: str | None) -> Throttled | None:
        """A Throttled when ``client_id`` has used up its failed attempts; counts nothing."""
        if client_id is None:
            return None
        key = _client_key(client_id)
        if await self._limiter.test(self.per_client_failures, "token-client", key):
            return None
        return Throttled("client", await self._retry_after(self.per_client_failures, "token-client", key))

    async def failed(self, client_id: str | None) -> None:
        """Record a failed client authentication of ``client_id``."""
        if client_id is not None:
            await self._limiter.hit(self.per_client_failures, "token-client", _client_key(client_id))

    async def reset(self) -> None:
        """Forget every window (tests, or an operator's reload)."""
        await self._limiter.storage.reset()


__all__ = ["Throttled", "TokenThrottle", "address_key", "presented_client_id"]
