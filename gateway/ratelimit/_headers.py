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
    tight = states[0]
    for state in states[1:]:
        if state.remaining < tight.remaining or (
            state.remaining == tight.remaining and state.reset_ms > tight.reset_ms
        ):
            tight = state
    return tight


def rate_headers(outcome: Outcome) -> dict[str, str]:
    headers: dict[str, str] = {}
    requests, tokens = outcome.requests, outcome.tokens
    if requests:
        tight = _tightest(requests)
        headers["x-ratelimit-limit-requests"] = str(tight.window.limit)
        headers["x-ratelimit-remaining-requests"] = str(tight.remaining)
        headers["x-ratelimit-reset-requests"] = duration(tight.reset_ms)
    if tokens:
        tight_tokens = _tightest(tokens)
        headers["x-ratelimit-limit-tokens"] = str(tight_tokens.window.limit)
        headers["x-ratelimit-remaining-tokens"] = str(tight_tokens.remaining)
        headers["x-ratelimit-reset-tokens"] = duration(tight_tokens.reset_ms)
    primary = requests or tokens
    if primary:
        tight = _tightest(primary)
        headers["RateLimit-Limit"] = str(tight.window.limit)
        headers["RateLimit-Remaining"] = str(tight.remaining)
        headers["RateLimit-Reset"] = str(_ceil_s(tight.reset_ms))
        headers["RateLimit-Policy"] = ", ".join([f"{s.window.limit};w={s.window.length_s}" for s in primary])
    return headers


def retry_after_s(ms: int) -> int:
    """Whole seconds, rounded up so a client that waits this long is not refused again; never negative."""
    return _ceil_s(ms)
