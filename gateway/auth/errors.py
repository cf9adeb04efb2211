"""Authentication and authorisation failures, and their RFC 6750 challenge headers.

    AuthError     401 invalid_token (or 503 when the key or introspection source is unreachable)
    Forbidden     403 insufficient_scope

Descriptions are fixed texts chosen here: they never contain any part of a token.
"""

from __future__ import annotations


class AuthError(Exception):
    """The bearer token is missing or not acceptable.

    ``reason`` is a short, bounded label for metrics (``expired``, ``bad_signature`` …);
    ``description`` is a human sentence safe to return to the client.
    ``status`` is 401, or 503 when verification could not be done (fail closed, retry later).
    """

    def __init__(self, reason: str, description: str, *, status: int = 401) -> None:
        super().__init__(f"{reason}: {description}")
        self.reason = reason
        self.description = description
        self.status = status

    @property
    def www_authenticate(self) -> str:
        """Value of the ``WWW-Authenticate`` header for this failure."""
        if self.reason == "missing":
            # RFC 6750 §3.1: no error code when the request carried no credentials at all.
            return bearer_challenge(None, None)
        return bearer_challenge("invalid_token", self.description)


class Forbidden(Exception):
    """The principal is authenticated but may not use this model or endpoint (403)."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description

    @property
    def www_authenticate(self) -> str:
        return bearer_challenge("insufficient_scope", self.description)


def _quote(value: str) -> str:
    # RFC 6750 §3: error_description is limited to %x20-21 / %x23-5B / %x5D-7E.
    return "".join(c for c in value if 0x20 <= ord(c) <= 0x7E and c not in '"\\')


def bearer_challenge(error: str | None, description: str | None, realm: str = "menshen") -> str:
    """Build ``Bearer realm="…", error="…", error_description="…"`` (RFC 6750 §3)."""
    parts = [f'realm="{_quote(realm)}"']
    if error:
        parts.append(f'error="{_quote(error)}"')
    if description:
        parts.append(f'error_description="{_quote(description)}"')
    return "Bearer " + ", ".join(parts)
