"""``Authenticator``: from an ``Authorization`` header to a ``Principal``, per the configured modes.

JWT-shaped tokens go to the ``JwtVerifier`` (company IdP and built-in issuer alike); other tokens go
to introspection when it is configured. ``--auth none`` yields the anonymous principal and is only
allowed on a loopback bind (``check_auth_none_allowed``).
"""

from __future__ import annotations

import logging

import httpx

from gateway.auth.config import AuthConfig, is_loopback_host
from gateway.auth.errors import AuthError
from gateway.auth.introspection import IntrospectionVerifier
from gateway.auth.jwks import JwksCache, RemoteJwksSource
from gateway.auth.jwt import IssuerTrust, JwtVerifier, looks_like_jwt
from gateway.auth.keystore import KEY_ALG, KeyFile, LocalKeySource
from gateway.auth.principal import Principal, anonymous_principal

logger = logging.getLogger(__name__)

# The built-in issuer's keys are a local file: a refetch is cheap, so rotation shows up fast.
LOCAL_KEYS_TTL_S = 60.0
LOCAL_KEYS_COOLDOWN_S = 1.0


def check_auth_none_allowed(host: str) -> str | None:
    """None when ``--auth none`` may be used with this bind host, else the error to report."""
    if is_loopback_host(host):
        return None
    return f"--auth none is only allowed when binding to loopback (127.0.0.1, ::1, localhost), not {host!r}"


def bearer_token(authorization_header: str | None) -> str:
    """The token of an RFC 6750 ``Bearer`` header; AuthError ``missing``/``malformed`` otherwise."""
    if not authorization_header:
        raise AuthError("missing", "A bearer token is required.")
    scheme, _, token = authorization_header.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise AuthError("missing", "A bearer token is required.")
    token = token.strip()
    if not token or any(c.isspace() for c in token):
        raise AuthError("malformed", "The Authorization header is not a valid bearer token.")
    return token


class Authenticator:
    """Authenticate requests; build it with ``Authenticator.from_config`` at start-up."""

    def __init__(
        self,
        *,
        jwt: JwtVerifier | None = None,
        introspection: IntrospectionVerifier | None = None,
        allow_anonymous: bool = False,
        max_token_bytes: int = 8192,
    ) -> None:
        if allow_anonymous and (jwt or introspection):
            raise ValueError("anonymous access cannot be combined with token verification")
        if not allow_anonymous and not (jwt or introspection):
            raise ValueError("no token verifier configured")
        self.jwt = jwt
        self.introspection = introspection
        self._anonymous = anonymous_principal() if allow_anonymous else None
        self._max_bytes = max_token_bytes

    @classmethod
    def from_config(cls, config: AuthConfig, http: httpx.AsyncClient) -> Authenticator:
        """Wire verifiers for ``config.modes``; ``http`` is used for JWKS, discovery and introspection."""
        if "none" in config.modes:
            logger.warning("AUTH IS DISABLED (--auth none): every local request is accepted as 'anonymous'")
            return cls(allow_anonymous=True)
        trusts: list[IssuerTrust] = []
        if "jwt" in config.modes:
            if not config.jwt_issuer or not config.jwt_audience:
                raise ValueError("jwt mode needs an issuer and an audience")
            source = RemoteJwksSource(
                http, issuer=config.jwt_issuer, jwks_url=config.jwks_url, timeout_s=config.fetch_timeout_s
            )
            cache = JwksCache(
                source, ttl_s=config.jwks_ttl_s, cooldown_s=config.jwks_refetch_cooldown_s, name="jwks"
            )
            trusts.append(
                IssuerTrust(config.jwt_issuer, config.jwt_audience, frozenset(config.algorithms), cache)
            )
        if "builtin" in config.modes:
            key_file = KeyFile(config.key_path)
            cache = JwksCache(
                LocalKeySource(key_file),
                ttl_s=LOCAL_KEYS_TTL_S,
                cooldown_s=LOCAL_KEYS_COOLDOWN_S,
                name="builtin",
            )
            trusts.append(
                IssuerTrust(config.issuer_url, config.builtin_audience, frozenset({KEY_ALG}), cache)
            )
        jwt = (
            JwtVerifier(trusts, leeway_s=config.leeway_s, max_token_bytes=config.max_token_bytes)
            if trusts
            else None
        )
        introspection = None
        if "introspection" in config.modes:
            if not config.introspection_url or not config.introspection_client_id:
                raise ValueError("introspection mode needs a URL and a client id")
            introspection = IntrospectionVerifier(
                http,
                url=config.introspection_url,
                client_id=config.introspection_client_id,
                client_secret=config.introspection_secret(),
                audience=config.introspection_audience,
                cache_ttl_s=config.introspection_cache_ttl_s,
                negative_ttl_s=config.introspection_negative_ttl_s,
                cache_size=config.introspection_cache_size,
                timeout_s=config.fetch_timeout_s,
            )
        return cls(jwt=jwt, introspection=introspection, max_token_bytes=config.max_token_bytes)

    async def authenticate(self, authorization_header: str | None) -> Principal:
        """The caller's Principal; raises AuthError (401, or 503 when a key source is down)."""
        if self._anonymous is not None:
            return self._anonymous
        token = bearer_token(authorization_header)
        if len(token) > self._max_bytes:
            raise AuthError("too_large", "The token exceeds the size limit.")
        if self.jwt is not None and (self.introspection is None or looks_like_jwt(token)):
            return await self.jwt.verify(token)
        if self.introspection is not None:
            return await self.introspection.verify(token)
        raise AuthError("malformed", "The token is not a JWT.")  # pragma: no cover - guarded in __init__
