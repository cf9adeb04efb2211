"""Opaque-token verification through RFC 7662 token introspection (Keycloak compatible).

The gateway authenticates to the introspection endpoint with HTTP Basic (``client_secret_basic``,
RFC 6749 §2.3.1). Active results are cached briefly by the token's hash (never the token itself),
capped by the token's own ``exp``; inactive results only for a couple of seconds. An unreachable
or failing endpoint refuses the request with 503: fail closed, nothing is accepted unverified.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any
from urllib.parse import quote_plus

import httpx

from gateway.auth.errors import AuthError
from gateway.auth.principal import Principal, principal_from_claims

logger = logging.getLogger(__name__)


def basic_auth_header(client_id: str, client_secret: str) -> str:
    """``Basic`` credentials with the form-encoding RFC 6749 §2.3.1 requires before base64."""
    raw = f"{quote_plus(client_id)}:{quote_plus(client_secret)}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


class IntrospectionVerifier:
    """Verify opaque (or any) bearer tokens by asking the authorisation server."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        url: str,
        client_id: str,
        client_secret: str,
        audience: str | None = None,
        cache_ttl_s: float = 30.0,
        negative_ttl_s: float = 2.0,
        cache_size: int = 10_000,
        timeout_s: float = 3.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._url = url
        self._auth = basic_auth_header(client_id, client_secret)
        self._audience = audience
        self._ttl = cache_ttl_s
        self._negative_ttl = negative_ttl_s
        self._size = cache_size
        self._timeout = httpx.Timeout(timeout_s)
        self._clock = clock
        # token sha256 -> (valid until, principal or None for inactive)
        self._cache: OrderedDict[bytes, tuple[float, Principal | None]] = OrderedDict()
        self.calls = 0  # introspection requests sent, for tests and benchmarks

    def _remember(self, digest: bytes, until: float, principal: Principal | None) -> None:
        self._cache[digest] = (until, principal)
        self._cache.move_to_end(digest)
        while len(self._cache) > self._size:
            self._cache.popitem(last=False)

    async def verify(self, token: str) -> Principal:
        digest = hashlib.sha256(token.encode("utf-8", "replace")).digest()
        now = self._clock()
        hit = self._cache.get(digest)
        if hit is not None:
            until, cached = hit
            if now < until:
                if cached is None:
                    raise AuthError("inactive", "The token is not active.")
                return cached
            del self._cache[digest]
        result = await self._introspect(token)
        try:
            principal, until = self._evaluate(result, token, now)
        except AuthError:
            if self._negative_ttl > 0:
                self._remember(digest, now + self._negative_ttl, None)
            raise
        if until > now:
            self._remember(digest, until, principal)
        return principal

    async def _introspect(self, token: str) -> dict[str, Any]:
        self.calls += 1
        try:
            response = await self._client.post(
                self._url,
                data={"token": token, "token_type_hint": "access_token"},
                headers={"Authorization": self._auth, "Accept": "application/json"},
                timeout=self._timeout,
                follow_redirects=False,
            )
        except httpx.HTTPError as exc:
            logger.warning("introspection: endpoint unreachable (%s)", type(exc).__name__)
            raise AuthError(
                "introspection_unavailable", "Token introspection is unavailable; retry later.", status=503
            ) from None
        if response.status_code != 200:
            # 401/403 here means the gateway's own credentials are wrong: an operator problem.
            logger.error("introspection: endpoint answered HTTP %d", response.status_code)
            raise AuthError(
                "introspection_unavailable", "Token introspection is unavailable; retry later.", status=503
            )
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            logger.error("introspection: response is not a JSON object")
            raise AuthError(
                "introspection_unavailable", "Token introspection is unavailable; retry later.", status=503
            )
        return body

    def _evaluate(self, result: dict[str, Any], token: str, now: float) -> tuple[Principal, float]:
        if result.get("active") is not True:
            raise AuthError("inactive", "The token is not active.")
        exp = result.get("exp")
        until = now + self._ttl
        if exp is not None:
            if isinstance(exp, bool) or not isinstance(exp, int | float) or not math.isfinite(exp):
                raise AuthError("malformed", "The introspected exp is not a number.")
            if exp <= now:
                raise AuthError("expired", "The token has expired.")
            until = min(until, float(exp))
        if self._audience is not None:
            aud = result.get("aud")
            auds = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
            if self._audience not in auds:
                raise AuthError("bad_audience", "The token is not meant for this service.")
        issuer = result.get("iss")
        return principal_from_claims(result, issuer if isinstance(issuer, str) else self._url, token), until
