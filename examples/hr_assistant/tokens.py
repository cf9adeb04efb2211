"""Access tokens of the app's own OAuth client: the client-credentials grant at ``<gateway>/oauth/token``.

authlib's ``OAuth2Client`` fetches the first token and fetches a new one when the current one is about to
expire (client credentials have no refresh token); ``refetch`` is for a token the gateway refused (401).
"""

from __future__ import annotations

import importlib
from functools import cache

import httpx
from authlib.integrations.httpx_client import OAuth2Client, OAuthError

from examples.hr_assistant.errors import AppError


class TokenSource:
    def __init__(
        self, gateway: str, client_id: str, client_secret: str, scope: str | None, timeout: float = 30.0
    ) -> None:
        self.token_endpoint = gateway.rstrip("/") + "/oauth/token"
        self._oauth = OAuth2Client(
            client_id=client_id,
            client_secret=client_secret,
            scope=scope or None,
            token_endpoint=self.token_endpoint,
            grant_type="client_credentials",
            timeout=timeout,
        )

    def access_token(self) -> str:
        """A token valid for at least the client's leeway (60 s), fetched when needed."""
        token = self._oauth.token
        if not token:
            return self.refetch()
        try:
            self._oauth.ensure_active_token(token)
        except (OAuthError, *_http_errors(), ValueError, KeyError) as exc:
            raise self._failure(exc) from exc
        return str(self._oauth.token["access_token"])

    def refetch(self) -> str:
        try:
            token = self._oauth.fetch_token(self.token_endpoint, grant_type="client_credentials")
            return str(token["access_token"])
        except (OAuthError, *_http_errors(), ValueError, KeyError) as exc:
            # ValueError, KeyError: an answer that is not a token (not JSON, no access_token)
            raise self._failure(exc) from exc

    def close(self) -> None:
        self._oauth.close()

    def _failure(self, exc: Exception) -> AppError:
        if isinstance(exc, OAuthError):
            detail = f"{exc.error}: {exc.description}" if exc.description else str(exc.error)
            return AppError(f"the token endpoint {self.token_endpoint} refused the client ({detail})")
        if isinstance(exc, _http_errors()):
            return AppError(f"cannot reach the token endpoint {self.token_endpoint} ({type(exc).__name__})")
        return AppError(f"the token endpoint {self.token_endpoint} did not answer with a token")


@cache
def _http_errors() -> tuple[type[Exception], ...]:
    """Transport errors of the HTTP library authlib runs on: httpx2 where installed, else httpx."""
    try:
        httpx2 = importlib.import_module("httpx2")
    except ImportError:
        return (httpx.HTTPError,)
    return (httpx.HTTPError, httpx2.HTTPError)
