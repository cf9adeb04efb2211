"""The built-in OAuth 2.0 issuer: ``client_credentials`` on Authlib's AuthorizationServer.

Authlib's server is framework-neutral but synchronous; Litestar is async. The route reads the form
and headers, then ``BuiltinIssuer.token_response`` runs Authlib in a worker thread (argon2 secret
verification is deliberately slow and must not block the event loop). Tokens are ES256 JWTs minted
from the key file; the gateway verifies them through the same ``JwtVerifier`` as external tokens.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import anyio.to_thread
from authlib.oauth2.rfc6749 import AuthorizationServer, ClientMixin, OAuth2Request
from authlib.oauth2.rfc6749.errors import InsecureTransportError, InvalidScopeError
from authlib.oauth2.rfc6749.grants import ClientCredentialsGrant
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload

from gateway.auth.clientstore import ClientStore, StoredClient
from gateway.auth.config import AuthConfig
from gateway.auth.keystore import KeyFile, StoredKey, mint_token, public_jwks, signing_key
from gateway.auth.throttle import TokenThrottle
from gateway.policy.sections import ClientsSection

logger = logging.getLogger(__name__)

AUTH_METHODS = ["client_secret_basic", "client_secret_post"]
TokenResponse = tuple[int, dict[str, Any], list[tuple[str, str]]]


class _Client(ClientMixin):  # type: ignore[misc]
    """Authlib's view of one client; an unknown id still costs one argon2 verification."""

    def __init__(self, client_id: str, stored: StoredClient | None, issuer: BuiltinIssuer) -> None:
        self.client_id = client_id
        self.stored = stored
        self._issuer = issuer

    def get_client_id(self) -> str:
        return self.client_id

    def check_client_secret(self, client_secret: str) -> bool:
        verified = self._issuer.clients.verify(self.client_id, client_secret)
        return verified is not None and self.stored is not None

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return endpoint == "token" and method in AUTH_METHODS

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "client_credentials"

    def get_allowed_scope(self, scope: str) -> str:
        return scope  # already checked to be a subset in _Grant.validate_token_request

    def allowed_scopes(self) -> frozenset[str]:
        return self._issuer.allowed_scopes(self.client_id, self.stored)


class _Grant(ClientCredentialsGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS

    def validate_token_request(self) -> None:
        super().validate_token_request()
        requested = set((self.request.payload.scope or "").split())
        if not requested <= self.request.client.allowed_scopes():
            raise InvalidScopeError(
                description="The requested scope exceeds the scope granted to this client."
            )

    def create_token_response(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        # Same as Authlib's, minus its debug log line that would print the token.
        token = self.generate_token(scope=self.request.payload.scope, include_refresh_token=False)
        self.save_token(token)
        return 200, token, self.TOKEN_RESPONSE_HEADER


class _Headers(dict[str, str]):
    """Case-insensitive header lookup: Authlib asks for ``Authorization``, ASGI keys are lower case."""

    def __init__(self, headers: Mapping[str, str]) -> None:
        super().__init__((k.lower(), v) for k, v in headers.items())

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)


class _TokenRequest(OAuth2Request):  # type: ignore[misc]
    def __init__(self, uri: str, form: dict[str, str], headers: Mapping[str, str]) -> None:
        super().__init__("POST", uri, headers=_Headers(headers))
        self._form = form
        self.payload = BasicOAuth2Payload(form)

    @property
    def form(self) -> dict[str, str]:
        return self._form

    @property
    def args(self) -> dict[str, str]:
        return {}


class _Server(AuthorizationServer):  # type: ignore[misc]
    def __init__(self, issuer: BuiltinIssuer) -> None:
        super().__init__()
        self._issuer = issuer
        self.register_grant(_Grant)
        self.register_token_generator("client_credentials", issuer.generate_token)

    def query_client(self, client_id: str) -> _Client:
        # Never None: unknown ids go through the same secret check and fail it (no enumeration).
        return _Client(client_id, self._issuer.clients.load().get(client_id), self._issuer)

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        return None  # stateless JWTs: nothing to store

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        return None

    def create_oauth2_request(self, request: _TokenRequest) -> _TokenRequest:
        return request

    def handle_response(self, status: int, body: Any, headers: Any) -> TokenResponse:
        return int(status), dict(body), [(str(k), str(v)) for k, v in headers]

    def validate_requested_scope(self, scope: str) -> None:
        return None  # per client, in _Grant


def oauth_error(status: int, error: str, description: str) -> TokenResponse:
    headers = [("Content-Type", "application/json"), ("Cache-Control", "no-store"), ("Pragma", "no-cache")]
    return status, {"error": error, "error_description": description}, headers


class BuiltinIssuer:
    """Issues client_credentials tokens and publishes its metadata and public keys."""

    def __init__(
        self,
        config: AuthConfig,
        *,
        clients_policy: Callable[[], ClientsSection] | None = None,
    ) -> None:
        self.issuer = config.issuer_url
        self.audience = config.builtin_audience
        self.token_ttl_s = config.token_ttl_s
        self.key_file = KeyFile(config.key_path)
        self.clients = ClientStore(config.secrets_path)
        self._policy = clients_policy
        self._keys: list[StoredKey] = self.key_file.ensure()
        self._keys_mtime = self.key_file.path.stat().st_mtime_ns
        self._server = _Server(self)
        self.throttle = TokenThrottle(
            per_address=config.token_attempts_per_address,
            per_client_failures=config.token_failures_per_client,
        )
        # Each argon2 verification takes ~64 MiB and a core for a fraction of a second: a few at once,
        # the rest wait (anyio's default thread pool would run 40 and exhaust memory).
        self._hash_slots = anyio.CapacityLimiter(config.max_concurrent_hashes)

    @property
    def token_endpoint(self) -> str:
        return self.issuer + "/oauth/token"

    def keys(self) -> list[StoredKey]:
        """The keys, re-read when ``gateway keys rotate`` changed the file."""
        mtime = self.key_file.path.stat().st_mtime_ns
        if mtime != self._keys_mtime:
            self._keys, self._keys_mtime = self.key_file.load(), mtime
        return self._keys

    def metadata(self) -> dict[str, Any]:
        """Authorization-server metadata, served as ``/.well-known/openid-configuration``."""
        return {
            "issuer": self.issuer,
            "token_endpoint": self.token_endpoint,
            "jwks_uri": self.issuer + "/oauth/jwks.json",
            "grant_types_supported": ["client_credentials"],
            "token_endpoint_auth_methods_supported": list(AUTH_METHODS),
            "response_types_supported": ["token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": sorted({k.alg for k in self.keys()}),
        }

    def jwks(self) -> dict[str, Any]:
        return public_jwks(self.keys())

    def allowed_scopes(self, client_id: str, stored: StoredClient | None) -> frozenset[str]:
        if stored is None:
            return frozenset()
        scopes = set(stored.scopes)
        if self._policy is not None:
            entry = self._policy().clients.get(client_id)
            if entry is not None:
                scopes.update(entry.scopes)
        return frozenset(scopes)

    def generate_token(
        self,
        grant_type: str,
        client: _Client,
        user: object = None,
        scope: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = False,
    ) -> dict[str, Any]:
        scopes = sorted(set(scope.split()) if scope else client.allowed_scopes())
        ttl = expires_in or self.token_ttl_s
        token = mint_token(
            signing_key(self.keys()),
            issuer=self.issuer,
            audience=self.audience,
            client_id=client.client_id,
            scopes=scopes,
            ttl_s=ttl,
            now=time.time(),
        )
        out: dict[str, Any] = {"access_token": token, "token_type": "Bearer", "expires_in": ttl}
        if scopes:
            out["scope"] = " ".join(scopes)
        return out

    async def token_response(self, form: dict[str, list[str]], headers: Mapping[str, str]) -> TokenResponse:
        """Handle one ``POST /oauth/token``; returns (status, JSON body, headers) in RFC 6749 shape."""
        repeated = sorted(k for k, v in form.items() if len(v) != 1)
        if repeated:
            return oauth_error(400, "invalid_request", "A parameter was sent more than once.")
        single = {k: v[0] for k, v in form.items()}
        authorization = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
        if authorization.lower().startswith("basic ") and "client_secret" in single:
            return oauth_error(400, "invalid_request", "Use one client authentication method, not two.")
        try:
            request = _TokenRequest(self.token_endpoint, single, headers)
        except InsecureTransportError:
            return oauth_error(400, "insecure_transport", "OAuth 2 requires https.")
        result: TokenResponse = await anyio.to_thread.run_sync(
            self._server.create_token_response, request, limiter=self._hash_slots
        )
        status, body, _headers = result
        if body.get("error") == "invalid_client":
            # One fixed text whatever failed (unknown id or wrong secret): no client enumeration.
            status, body, response_headers = oauth_error(
                401, "invalid_client", "Client authentication failed."
            )
            response_headers.append(("WWW-Authenticate", 'Basic realm="menshen", error="invalid_client"'))
            result = (status, body, response_headers)
        if status == 200:
            logger.info("issuer: token issued to client %s", getattr(request.client, "client_id", "?"))
        else:
            logger.info("issuer: token request refused (%s)", body.get("error"))
        return result
