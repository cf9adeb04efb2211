"""Configuration of the rate limiter: where counters live and how long Redis may take."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.options import option

# Schemes the `limits` storage registry maps to redis-py clients (plain, TLS, unix socket,
# Sentinel, Cluster); the leading "async+" is optional here and added when the storage is built.
REDIS_SCHEMES = frozenset(
    {"redis", "rediss", "redis+unix", "redis+sentinel", "redis+cluster", "valkey", "valkeys"}
)


class RateLimitConfig(BaseModel):
    """Limiter settings, validated once at start-up (pydantic reports every bad field at once)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    redis_url: str | None = Field(
        None,
        description=(
            "Shared storage for every replica, e.g. redis://:pw@host:6379/0, rediss:// (TLS), "
            "redis+sentinel://h1:26379,h2:26379/mymaster, redis+cluster://h1:7000,h2:7001. "
            "None: in-memory counters, per process."
        ),
        repr=False,  # it may carry a password
    )
    command_timeout_ms: int = Field(
        50,
        ge=1,
        le=5000,
        description=(
            "Bound on every Redis command, milliseconds of time this process's event loop was free to read "
            "the reply (time the loop spent late, busy with other requests, is not counted against Redis)."
        ),
        json_schema_extra=option("redis_timeout_ms"),
    )
    loop_lag_allowance_ms: int = Field(
        5000,
        ge=0,
        le=60000,
        description=(
            "How much wall time may be added to a Redis command's timeout while this process's event loop "
            "is busy or Redis keeps answering other commands, before the command is given up on anyway, "
            "milliseconds; 0 makes the timeout plain wall time."
        ),
        json_schema_extra=option("redis_loop_lag_allowance_ms"),
    )
    key_prefix: str = Field(
        "menshen:rl:",
        min_length=1,
        max_length=64,
        description="Prefix of every rate-limit key in Redis.",
        json_schema_extra=option("redis_key_prefix"),
    )
    lease_ttl_s: float = Field(
        30.0,
        ge=1.0,
        le=3600.0,
        description="A concurrency lease expires this long after its holder's last heartbeat, seconds.",
        json_schema_extra=option("lease_ttl"),
    )
    probe_interval_s: float = Field(
        1.0,
        gt=0,
        le=60.0,
        description="After a Redis failure, requests skip Redis for this long before it is tried again, seconds.",
        json_schema_extra=option("redis_probe_interval"),
    )
    concurrency_retry_after_s: int = Field(
        1,
        ge=0,
        le=3600,
        description="Retry-After of a 429 for too many concurrent requests, seconds.",
        json_schema_extra=option("concurrency_retry_after"),
    )

    @field_validator("redis_url")
    @classmethod
    def _known_scheme(cls, url: str | None) -> str | None:
        if url is None:
            return None
        scheme = urlsplit(url).scheme.removeprefix("async+")
        if scheme not in REDIS_SCHEMES:
            # never echo the URL itself: it may carry a password
            raise ValueError(f"unsupported Redis URL scheme {scheme!r}; use one of {sorted(REDIS_SCHEMES)}")
        return url

    @property
    def heartbeat_s(self) -> float:
        """Leases are refreshed three times per TTL, so one missed beat does not drop them."""
        return self.lease_ttl_s / 3
