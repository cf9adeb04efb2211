"""Endpoints of the built-in OAuth issuer: token, discovery metadata and public keys.

Mount with ``oauth_router(issuer)``; the issuer instance is injected as a dependency.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, Router, get, post
from litestar.di import NamedDependency, Provide

from gateway.auth.issuer import BuiltinIssuer, oauth_error

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
    return _response(*await issuer.token_response(form, dict(request.headers)))


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
