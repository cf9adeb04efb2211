"""Exceptions of the limiter; the app maps them to HTTP (429 and 503).

LimiterError
├── RateLimited          a limit is reached: 429 with Retry-After and the rate headers
└── LimiterUnavailable   shared storage failed and the policy is fail_closed: 503
"""

from __future__ import annotations

from typing import Literal

LimitName = Literal["requests", "tokens", "concurrency"]


class LimiterError(Exception):
    """Base of the limiter's documented exceptions; nothing else escapes `admit`."""


class RateLimited(LimiterError):
    """A limit is reached. No charge was left behind by the refused request."""

    def __init__(self, limit: LimitName, retry_after_s: int, headers: dict[str, str], message: str) -> None:
        super().__init__(message)
        self.limit: LimitName = limit
        self.retry_after_s = max(0, retry_after_s)
        self.headers = headers
        self.message = message


class LimiterUnavailable(LimiterError):
    """The shared storage is unreachable or too slow and the policy says fail_closed."""

    def __init__(self, message: str = "Rate limiter storage unavailable") -> None:
        super().__init__(message)
        self.message = message
