"""Who is calling: the identity derived from a verified token."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.auth.errors import AuthError

ANONYMOUS_CLIENT = "anonymous"
ANONYMOUS_ISSUER = "none"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller. ``token_id_hash`` identifies the token in logs without revealing it."""

    client_id: str
    scopes: frozenset[str]
    subject: str
    issuer: str
    token_id_hash: str

    @property
    def is_anonymous(self) -> bool:
        """True only for the ``--auth none`` development principal."""
        return self.issuer == ANONYMOUS_ISSUER


def anonymous_principal() -> Principal:
    return Principal(ANONYMOUS_CLIENT, frozenset(), ANONYMOUS_CLIENT, ANONYMOUS_ISSUER, "")


def token_hash(token: str | bytes) -> str:
    """Short SHA-256 of a token: safe to log, stable enough to correlate records."""
    data = token.encode("utf-8", "replace") if isinstance(token, str) else token
    return hashlib.sha256(data).hexdigest()[:16]


def _scopes(claims: Mapping[str, Any]) -> frozenset[str]:
    scope = claims.get("scope")
    if scope is None:
        scope = claims.get("scp")
    if scope is None:
        return frozenset()
    if isinstance(scope, str):
        return frozenset(scope.split())
    if isinstance(scope, list) and all(isinstance(s, str) for s in scope):
        return frozenset(s for s in scope if s)
    raise AuthError("malformed", "The scope claim has an invalid type.")


def principal_from_claims(claims: Mapping[str, Any], issuer: str, token_id: str) -> Principal:
    """Map verified claims to a Principal: client from ``azp``, ``client_id``, then ``sub``."""
    client_id: object = None
    for name in ("azp", "client_id", "sub"):
        value = claims.get(name)
        if value is not None:
            client_id = value
            break
    if not isinstance(client_id, str) or not client_id:
        raise AuthError("malformed", "The token names no client (azp, client_id or sub).")
    subject = claims.get("sub")
    if subject is not None and not isinstance(subject, str):
        raise AuthError("malformed", "The sub claim has an invalid type.")
    return Principal(
        client_id=client_id,
        scopes=_scopes(claims),
        subject=subject or client_id,
        issuer=issuer,
        token_id_hash=token_hash(token_id),
    )
