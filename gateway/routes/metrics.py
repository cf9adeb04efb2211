"""GET /metrics in Prometheus (or OpenMetrics) format, optionally behind a bearer token."""

from __future__ import annotations

import hmac
from typing import Any

from litestar import Request, get
from litestar.handlers import HTTPRouteHandler
from litestar.response.base import ASGIResponse

from gateway.errors import Unauthenticated
from gateway.telemetry.metrics import Metrics


def metrics_route(metrics: Metrics, token: str | None) -> HTTPRouteHandler:
    """The handler bound to ``metrics``; with ``token`` set, scrapes must send ``Bearer <token>``."""
    expected = f"Bearer {token}".encode() if token else None

    @get("/metrics", sync_to_thread=False, include_in_schema=False)
    def scrape(request: Request[Any, Any, Any]) -> ASGIResponse:
        if expected is not None:
            sent = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(sent, expected):
                raise Unauthenticated(
                    "A valid bearer token is required for /metrics.",
                    headers={"www-authenticate": 'Bearer realm="metrics"'},
                )
        body, content_type = metrics.render(request.headers.get("accept"))
        return ASGIResponse(body=body, media_type=content_type)

    return scrape


__all__ = ["metrics_route"]
