"""Redaction of secrets and content before anything reaches a log, a span or an audit record.

Two layers, both fail closed:

* by key: a value stored under a sensitive key (``authorization``, ``prompt``, ``messages``,
  ``content``, ...) is replaced whole by ``[REDACTED LENGTH=n HASH=sha256:12hex]``, whatever it is;
* by value: every other string is searched for bearer tokens, JWT-looking strings,
  ``key=value`` credentials and the literal secrets the gateway knows (client secrets, the
  engine key), which are replaced in place.

Prompt or output text under an innocent key cannot be recognised by its shape, so the rule for
callers stays: never pass content to a logger; pass its length and hash (``redact``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any, Final

# Keys whose values are always redacted (compared lower-cased, with "-" read as "_").
SENSITIVE_KEYS: Final[frozenset[str]] = frozenset(
    {
        "authorization",
        "proxy_authorization",
        "cookie",
        "set_cookie",
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "bearer",
        "api_key",
        "apikey",
        "x_api_key",
        "secret",
        "client_secret",
        "password",
        "passwd",
        "private_key",
        "prompt",
        "messages",
        "message_content",
        "content",
        "reasoning",
        "reasoning_content",
        "text",
        "input",
        "output",
        "completion",
        "choices",
        "delta",
        "matched",
        "body",
    }
)
# Suffixes that also mark a key as sensitive: ``internal_token``, ``engine_api_key``, ...
_SENSITIVE_SUFFIXES: Final[tuple[str, ...]] = ("_token", "_secret", "_password", "_api_key", "_apikey")

_TOKEN_CHARS = r"[A-Za-z0-9\-._~+/]+=*"  # noqa: S105 - a regex, not a password
_PATTERNS: Final[tuple[re.Pattern[str], ...]] = (
    # "Bearer <token>" / "Basic <creds>" anywhere, e.g. a header echoed in an error message.
    re.compile(r"(?i)\b(?:bearer|basic)\s+(" + _TOKEN_CHARS + ")"),
    # JWT / JWS / JWE: base64url JSON header "eyJ" then at least one more segment.
    re.compile(r"(eyJ[A-Za-z0-9_\-]{4,}(?:\.[A-Za-z0-9_\-]*){1,4})"),
    # key=value or "key": "value" credentials in query strings, form bodies and JSON text.
    re.compile(
        r"(?i)(?:access_token|refresh_token|id_token|client_secret|api[_\-]?key|password|passwd|secret|token)"
        r"""["']?\s*[:=]\s*["']?([^\s"'&,;}]+)"""
    ),
)
_MAX_DEPTH: Final = 8


def redact(value: str | bytes) -> str:
    """``[REDACTED LENGTH=n HASH=sha256:12hex]``: enough to correlate, never the value."""
    data = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value
    digest = hashlib.sha256(data).hexdigest()[:12]
    return f"[REDACTED LENGTH={len(value)} HASH=sha256:{digest}]"


def is_sensitive_key(key: str) -> bool:
    k = key.lower().replace("-", "_")
    return k in SENSITIVE_KEYS or k.endswith(_SENSITIVE_SUFFIXES)


class Scrubber:
    """Redacts sensitive keys and secret-looking substrings; also a structlog processor.

    ``literals`` are secrets known at start-up (client secrets, the engine's internal key, the
    metrics token): they are removed wherever they appear. ``extra_keys`` adds sensitive keys.
    """

    __slots__ = ("_extra_keys", "_literal_re")

    def __init__(self, *, literals: Iterable[str] = (), extra_keys: Iterable[str] = ()) -> None:
        # Short literals would redact ordinary words; a secret that short is a policy problem anyway.
        lits = sorted({s for s in literals if len(s) >= 8}, key=len, reverse=True)
        self._literal_re = re.compile("|".join(re.escape(s) for s in lits)) if lits else None
        self._extra_keys = frozenset(k.lower().replace("-", "_") for k in extra_keys)

    def sensitive(self, key: str) -> bool:
        return is_sensitive_key(key) or key.lower().replace("-", "_") in self._extra_keys

    def scrub_text(self, text: str) -> str:
        """Replace secret-looking substrings of ``text`` (the surrounding text is kept)."""
        if self._literal_re is not None:
            text = self._literal_re.sub(lambda m: redact(m.group(0)), text)
        for pattern in _PATTERNS:
            text = pattern.sub(_redact_group, text)
        return text

    def scrub_value(self, key: str, value: object, depth: int = 0) -> object:
        if value is None or isinstance(value, bool):
            return value
        if self.sensitive(key):
            return redact(value if isinstance(value, str | bytes) else repr(value))
        return self._scrub_nested(value, depth)

    def scrub_mapping(self, data: Mapping[str, object], depth: int = 0) -> dict[str, object]:
        return {k: self.scrub_value(str(k), v, depth + 1) for k, v in data.items()}

    def _scrub_nested(self, value: object, depth: int) -> object:
        if isinstance(value, str):
            return self.scrub_text(value)
        if isinstance(value, int | float):
            return value
        if depth >= _MAX_DEPTH:
            return redact(repr(value))
        if isinstance(value, Mapping):
            return self.scrub_mapping(value, depth)
        if isinstance(value, list | tuple | set | frozenset):
            return [self._scrub_nested(v, depth + 1) for v in value]
        if isinstance(value, bytes):
            return redact(value)
        # Unknown objects are rendered by the log renderer with str(); scrub that text now.
        return self.scrub_text(str(value))

    def __call__(self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> dict[str, Any]:
        """structlog processor: scrub every field, the event message included."""
        return {
            k: (v if k.startswith("_") else self.scrub_value(k, v)) if k != "event" else self._event(v)
            for k, v in event_dict.items()
        }

    def _event(self, value: object) -> object:
        return self.scrub_text(value) if isinstance(value, str) else self._scrub_nested(value, 1)


def _redact_group(match: re.Match[str]) -> str:
    whole = match.group(0)
    secret = match.group(1)
    start = match.start(1) - match.start(0)
    return whole[:start] + redact(secret) + whole[start + len(secret) :]


__all__ = ["SENSITIVE_KEYS", "Scrubber", "is_sensitive_key", "redact"]
