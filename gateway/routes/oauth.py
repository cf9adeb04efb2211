"""Endpoints of the built-in OAuth issuer: token, discovery metadata and public keys.

Mount with ``oauth_router(issuer)``; the issuer instance is injected as a dependency. The token
endpoint is throttled (``issuer.throttle``) before any secret is verified: 429 ``slow_down``.
"""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request, Response, Router, get, post
from litestar.di import NamedDependency, Provide

from gateway.auth.issuer import BuiltinIssuer, TokenResponse, oauth_error
from gateway.auth.throttle import Throttled, presented_client_id

logger = logging.getLogger(__name__)

MAX_TOKEN_REQUEST_BYTES = 16 * 1024
_PUBLIC_CACHE = "public, max-age=300"


def _response(status: int, body: dict[str, Any], headers: list[tuple[str, str]]) -> Response[dict[str, Any]]:
    merged = {k: v for k, v in headers if k.lower() != "content-type"}
    merged.setdefault("Cache-Control", "no-store")
    return Response(body, status_code=status, headers=merged, media_type="application/json")


@post("/oauth/token", status_code=200, request_max_body_size=MAX_TOKEN_REQUEST_BYTES)
async def token(
    request: Request[Any, Any, Any], issuer: NamedDependency[BuiltinIssuer]
) -> Response[dict[str, Any]]:
    """RFC 6749 §4.4 client credentials grant."""
    throttled = await issuer.throttle.admit_address(request.client.host if request.client else None)
    if throttled is not None:
        return _response(*_slow_down(throttled))
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/x-www-form-urlencoded":
        return _response(
            *oauth_error(400, "invalid_request", "Send an application/x-www-form-urlencoded body.")
        )
    form: dict[str, list[str]] = {}
    for key, value in (await request.form()).multi_items():
        if not isinstance(value, str):
            return _response(*oauth_error(400, "invalid_request", "File uploads are not accepted."))
        form.setdefault(key, []).append(value)
    if form.get("grant_type", [""])[0] != "client_credentials":
        return _response(*oauth_error(400, "unsupported_grant_type", "Only client_credentials is supported."))
    headers = dict(request.headers)
    client_id = presented_client_id(form, headers)
    attempt = issuer.throttle.reserve_client(client_id)
    if isinstance(attempt, Throttled):
        return _response(*_slow_down(attempt))
    result = await issuer.token_response(form, headers)
    if result[1].get("error") != "invalid_client":
        issuer.throttle.succeeded(attempt)
    return _response(*result)


def _slow_down(throttled: Throttled) -> TokenResponse:
    # RFC 8628 registers ``slow_down`` as a token endpoint error; the body keeps RFC 6749's shape.
    logger.warning("issuer: token requests throttled per %s", throttled.scope)
    status, body, headers = oauth_error(429, "slow_down", "Too many token requests; retry later.")
    headers.append(("Retry-After", str(throttled.retry_after_s)))
    return status, body, headers


@get("/.well-known/openid-configuration", sync_to_thread=False)
def openid_configuration(issuer: NamedDependency[BuiltinIssuer]) -> Response[dict[str, Any]]:
    return Response(issuer.metadata(), headers={"Cache-Control": _PUBLIC_CACHE})


@get("/oauth/jwks.json", sync_to_thread=False)
def jwks(issuer: NamedDependency[BuiltinIssuer]) -> Response[dict[str, Any]]:
    return Response(issuer.jwks(), headers={"Cache-Control": _PUBLIC_CACHE})


def oauth_router(issuer: BuiltinIssuer) -> Router:
    """A Router with the issuer endpoints, bound to ``issuer``."""

    def provide_issuer() -> BuiltinIssuer:
        return issuer

    return Router(
        path="/",
        route_handlers=[token, openid_configuration, jwks],
        dependencies={"issuer": Provide(provide_issuer, use_cache=True, sync_to_thread=False)},
    )
