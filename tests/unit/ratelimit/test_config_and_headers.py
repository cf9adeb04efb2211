"""Configuration validation, policy rate strings and header formatting (no storage needed)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gateway.policy.sections import TierLimits
from gateway.ratelimit import RateLimitConfig, parse_windows
from gateway.ratelimit._headers import duration, rate_headers, retry_after_s
from gateway.ratelimit._plan import Outcome, Window, WindowState


@pytest.mark.parametrize(
    "url",
    [
        "redis://:pw@host:6379/0",
        "rediss://user:pw@host:6380/1",
        "redis+sentinel://h1:26379,h2:26379/mymaster",
        "redis+cluster://h1:7000,h2:7001",
        "async+redis://host",
    ],
)
def test_supported_redis_urls(url: str) -> None:
    assert RateLimitConfig(redis_url=url).redis_url == url


def test_bad_config_reports_every_problem_without_the_secret() -> None:
    with pytest.raises(ValidationError) as info:
        RateLimitConfig(redis_url="http://:hunter2@host", command_timeout_ms=0, lease_ttl_s=0)
    assert info.value.error_count() == 3
    # our messages never echo the URL (render errors with include_input=False to drop pydantic's copy)
    assert "hunter2" not in str(info.value.errors(include_input=False, include_url=False))


def test_policy_rejects_a_bad_rate_at_load_time() -> None:
    with pytest.raises(ValidationError, match="60/minute"):
        TierLimits(requests="60 per fortnight")
    assert TierLimits(tokens="10 per 2 minutes").tokens == "10 per 2 minutes"


def test_windows_parse_and_keep_the_stricter_duplicate() -> None:
    assert parse_windows("60/minute;1000/day;50/60 seconds") == (Window(50, 60), Window(1000, 86400))
    assert parse_windows(None) == ()


@pytest.mark.parametrize(
    ("ms", "text"),
    [(0, "0ms"), (250, "250ms"), (1000, "1s"), (1001, "2s"), (60_000, "1m0s"), (3_661_000, "1h1m1s")],
)
def test_reset_durations_in_openai_format(ms: int, text: str) -> None:
    assert duration(ms) == text


def test_retry_after_is_never_negative_and_rounds_up() -> None:
    assert retry_after_s(-5) == 0
    assert retry_after_s(1) == 1
    assert retry_after_s(2000) == 2


def test_headers_report_the_window_closest_to_exhaustion() -> None:
    minute = WindowState(Window(60, 60), remaining=50, reset_ms=30_000, start=0)
    day = WindowState(Window(1000, 86400), remaining=3, reset_ms=7_200_000, start=0)
    tokens = WindowState(Window(10_000, 60), remaining=9_000, reset_ms=30_000, start=0)
    h = rate_headers(Outcome(True, None, 0, 0, (minute, day), (tokens,)))
    assert h["RateLimit-Limit"] == "1000"
    assert h["RateLimit-Remaining"] == "3"
    assert h["RateLimit-Reset"] == "7200"
    assert h["RateLimit-Policy"] == "60;w=60, 1000;w=86400"
    assert h["x-ratelimit-reset-requests"] == "2h0m0s"
    assert h["x-ratelimit-remaining-tokens"] == "9000"
    only_tokens = rate_headers(Outcome(True, None, 0, 0, (), (tokens,)))
    assert only_tokens["RateLimit-Policy"] == "10000;w=60"
    assert "x-ratelimit-limit-requests" not in only_tokens
