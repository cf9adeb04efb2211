"""Rate limits and token quotas per client, shared across replicas through Redis.

limiter = RateLimiter(RateLimitConfig(redis_url="redis://127.0.0.1:6379/0"))
admission = await limiter.admit(client_id, tier_limits, reserve_tokens, "fail_closed")
try:
    ...  # response carries admission.headers
finally:
    await admission.settle(used_tokens)
"""

from ._config import RateLimitConfig
from ._errors import LimiterError, LimiterUnavailable, LimitName, RateLimited
from ._limiter import Admission, LimiterStatus, OnRedisError, RateLimiter
from ._plan import parse_windows

__all__ = [
    "Admission",
    "LimitName",
    "LimiterError",
    "LimiterStatus",
    "LimiterUnavailable",
    "OnRedisError",
    "RateLimitConfig",
    "RateLimited",
    "RateLimiter",
    "parse_windows",
]
