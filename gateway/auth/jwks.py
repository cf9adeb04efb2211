"""Signing keys of a token issuer, fetched and cached.

A ``KeySource`` yields the public keys by ``kid``: a remote JWKS (URL or OIDC discovery) or the
built-in issuer's key file. ``JwksCache`` sits in front of either one:

- keys are fresh for ``ttl_s``; a stale set is refreshed on the next lookup, and kept if that fails;
- an unknown ``kid`` causes a refetch, one at a time (single-flight), and at most one fetch per
  ``cooldown_s`` (a flood of random kids cannot turn into a flood of fetches);
- a cold cache whose fetch fails refuses every token (fail closed, 503).

Nothing here ever fetches a URL taken from a token.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import httpx
from joserfc.errors import JoseError
from joserfc.jwk import JWKRegistry, Key

from gateway.auth.errors import AuthError

logger = logging.getLogger(__name__)

# A JWKS or discovery document larger than this is refused rather than parsed.
MAX_DOCUMENT_BYTES = 512 * 1024
_ASYMMETRIC_KTY = frozenset({"RSA", "EC", "OKP"})


class KeySourceUnavailable(Exception):
    """The key source could not be read; ``detail`` is safe to log (no secrets)."""


class KeySource(Protocol):
    async def fetch(self) -> dict[str, Key]:
        """Return the current public signing keys by kid; raise KeySourceUnavailable on failure."""
        ...


def parse_jwks(document: object) -> dict[str, Key]:
    """Import the usable signature keys of a JWKS document.

    Symmetric (``oct``) keys, encryption keys and keys that do not import are skipped: an IdP's JWKS
    often also lists encryption keys, and one odd key must not disable the others.
    """
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise KeySourceUnavailable("not a JWKS document")
    keys: dict[str, Key] = {}
    for entry in document["keys"]:
        if not isinstance(entry, dict) or entry.get("kty") not in _ASYMMETRIC_KTY:
            continue
        if entry.get("use", "sig") != "sig" or any(p in entry for p in ("d", "p", "q")):
            continue  # encryption key, or a private key published by mistake
        try:
            key = JWKRegistry.import_key(entry)
        except (JoseError, ValueError, TypeError) as exc:
            logger.warning("jwks: skipped a key that does not import (%s)", type(exc).__name__)
            continue
        kid = entry.get("kid")
        if not isinstance(kid, str) or not kid:
            key.ensure_kid()  # thumbprint; such a key is used only when it is the sole key
            kid = key.kid
        if isinstance(kid, str):
            keys[kid] = key
    return keys


class RemoteJwksSource:
    """Keys from a JWKS URL, or from the ``jwks_uri`` of the issuer's OIDC discovery document."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        issuer: str,
        jwks_url: str | None = None,
        timeout_s: float = 3.0,
    ) -> None:
        self._client = client
        self._issuer = issuer
        self._jwks_url = jwks_url
        self._timeout = httpx.Timeout(timeout_s)

    async def _get_json(self, url: str) -> Any:
        try:
            response = await self._client.get(url, timeout=self._timeout, follow_redirects=False)
        except httpx.HTTPError as exc:
            raise KeySourceUnavailable(f"{type(exc).__name__} fetching {url}") from exc
        if response.status_code != 200:
            raise KeySourceUnavailable(f"HTTP {response.status_code} from {url}")
        if len(response.content) > MAX_DOCUMENT_BYTES:
            raise KeySourceUnavailable(f"document too large from {url}")
        try:
            return response.json()
        except ValueError as exc:
            raise KeySourceUnavailable(f"invalid JSON from {url}") from exc

    async def _discover(self) -> str:
        url = self._issuer.rstrip("/") + "/.well-known/openid-configuration"
        document = await self._get_json(url)
        if not isinstance(document, dict):
            raise KeySourceUnavailable("discovery document is not an object")
        # OIDC Discovery §4.3: the document must name exactly the issuer it was fetched for.
        if document.get("issuer") != self._issuer:
            raise KeySourceUnavailable("discovery document names a different issuer")
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri.startswith(("https://", "http://")):
            raise KeySourceUnavailable("discovery document has no usable jwks_uri")
        return jwks_uri

    async def fetch(self) -> dict[str, Key]:
        if self._jwks_url is None:
            self._jwks_url = await self._discover()
        return parse_jwks(await self._get_json(self._jwks_url))


class JwksCache:
    """Cached keys of one issuer with TTL, single-flight refetch and a refetch cooldown."""

    def __init__(
        self,
        source: KeySource,
        *,
        ttl_s: float,
        cooldown_s: float,
        name: str = "jwks",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source = source
        self._ttl = ttl_s
        self._cooldown = cooldown_s
        self._name = name
        self._clock = clock
        self._keys: dict[str, Key] = {}
        self._fresh_until = float("-inf")
        self._last_attempt: float | None = None
        self._lock = asyncio.Lock()
        self.fetches = 0  # fetch attempts, for tests, benchmarks and metrics

    @property
    def has_keys(self) -> bool:
        return bool(self._keys)

    def _lookup(self, kid: str | None) -> Key | None:
        if kid is None:
            # A token without kid is accepted only when the issuer has exactly one key.
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    async def get(self, kid: str | None) -> Key:
        """The key for ``kid``; raises AuthError ``unknown_key`` or ``jwks_unavailable`` (503)."""
        if self._clock() >= self._fresh_until and not self._lock.locked():
            await self.refresh()
        key = self._lookup(kid)
        if key is not None:
            return key
        await self.refresh()
        key = self._lookup(kid)
        if key is not None:
            return key
        if not self._keys:
            raise AuthError(
                "jwks_unavailable", "The token signing keys are unavailable; retry later.", status=503
            )
        raise AuthError("unknown_key", "The token was signed by an unknown key.")

    def _cooling_down(self) -> bool:
        return self._last_attempt is not None and self._clock() - self._last_attempt < self._cooldown

    async def refresh(self) -> None:
        """Fetch the keys unless a fetch ran within the cooldown; concurrent callers share one fetch."""
        if self._cooling_down():
            return
        async with self._lock:
            if self._cooling_down():
                return  # another caller fetched while this one waited
            self._last_attempt = self._clock()
            self.fetches += 1
            try:
                keys = await self._source.fetch()
            except KeySourceUnavailable as exc:
                state = "keeping cached keys" if self._keys else "no keys: refusing tokens"
                logger.warning("%s: key fetch failed (%s); %s", self._name, exc, state)
                return
            self._keys = keys
            self._fresh_until = self._clock() + self._ttl
