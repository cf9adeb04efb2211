"""Rate headers for every response: the IETF draft's RateLimit-* and OpenAI's x-ratelimit-*.

RateLimit-* (draft-ietf-httpapi-ratelimit-headers-07) describe the request quota, or the token
quota when no request limit is set; of several windows they report the one closest to exhaustion.
RateLimit-Policy lists every window as ``limit;w=seconds``.
"""

from __future__ import annotations

from ._plan import Outcome, WindowState


def _ceil_s(ms: int) -> int:
    return max(0, -(-ms // 1000))


def duration(ms: int) -> str:
    """OpenAI's reset format (Go durations): ``250ms``, ``12s``, ``6m0s``, ``1h0m0s``."""
    ms = max(0, ms)
    if ms < 1000:
        return f"{ms}ms"
    seconds = _ceil_s(ms)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def _tightest(states: tuple[WindowState, ...]) -> WindowState:
    # least remaining; on a tie the one that resets later binds longer
    return min(states, key=lambda s: (s.remaining, -s.reset_ms))


def rate_headers(outcome: Outcome) -> dict[str, str]:
    headers: dict[str, str] = {}
    for unit, states in (("requests", outcome.requests), ("tokens", outcome.tokens)):
        if states:
            tight = _tightest(states)
            headers[f"x-ratelimit-limit-{unit}"] = str(tight.window.limit)
            headers[f"x-ratelimit-remaining-{unit}"] = str(tight.remaining)
            headers[f"x-ratelimit-reset-{unit}"] = duration(tight.reset_ms)
    primary = outcome.requests or outcome.tokens
    if primary:
        tight = _tightest(primary)
        headers["RateLimit-Limit"] = str(tight.window.limit)
        headers["RateLimit-Remaining"] = str(tight.remaining)
        headers["RateLimit-Reset"] = str(_ceil_s(tight.reset_ms))
        headers["RateLimit-Policy"] = ", ".join(f"{s.window.limit};w={s.window.length_s}" for s in primary)
    return headers


def retry_after_s(ms: int) -> int:
    """Whole seconds, rounded up so a client that waits this long is not refused again; never negative."""
    return _ceil_s(ms)
