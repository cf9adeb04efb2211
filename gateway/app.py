"""``create_app(settings)``: the Litestar app over the collaborators ``state.build_state`` makes.

It wires routes, error handlers, the access log and the server span, and the lifespan: background work
(policy watcher, gauges, the metrics port) starts with the app and stops with it. Nothing happens at import
time.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, cast

from litestar import Litestar, Request, Response
from litestar.di import Provide
from litestar.exceptions import HTTPException

from gateway.edge import EdgeMiddleware, edge_config
from gateway.errors import GatewayError, error_json
from gateway.policy.watcher import install_sighup, watch
from gateway.routes.completions import CompletionsController
from gateway.routes.embeddings import create_embeddings
from gateway.routes.health import healthz, readyz
from gateway.routes.metrics import metrics_route
from gateway.routes.models import list_models
from gateway.routes.oauth import oauth_router
from gateway.settings import Settings, read_secret_file
from gateway.state import AppParts, GatewayState, build_state
from gateway.telemetry.access import AccessLogMiddleware
from gateway.telemetry.server_span import server_span_middleware

if TYPE_CHECKING:
    from litestar.types import ASGIApp

log = logging.getLogger("menshen.app")

_STATUS_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
}


def create_app(settings: Settings, parts: AppParts | None = None) -> Litestar:
    parts = parts or AppParts()
    state = build_state(settings, parts)
    telemetry, issuer, relay, embeddings = state.telemetry, state.issuer, state.relay, state.embeddings

    @contextlib.asynccontextmanager
    async def lifespan(_app: Litestar) -> AsyncIterator[None]:
        tasks = [
            asyncio.create_task(watch(state.policy), name="policy-watcher"),
            asyncio.create_task(_refresh_gauges(state), name="gauges"),
            asyncio.create_task(
                state.upstreams.keep_fresh(settings.engine.models_refresh), name="upstream-models"
            ),
        ]
        metrics_port = settings.telemetry.metrics_port
        metrics_server = (
            state.recorder.metrics.serve_metrics(settings.server.host, metrics_port)
            if metrics_port is not None
            else None
        )
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            install_sighup(asyncio.get_running_loop(), state.policy)
        if not await state.limiter.warm_up():
            log.warning("rate-limit storage not reachable at start; the policy's on_redis_error applies")
        # Start-up leaves ~100k long-lived objects (automata, tables, modules): keep them out of every full
        # collection, which would otherwise stall all streams for a few hundred milliseconds.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            # uvicorn re-raises SIGTERM after shutdown: flush buffered spans while we still can.
            telemetry.force_flush()
            if metrics_server is not None:
                metrics_server.close()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await state.upstreams.aclose()
            await state.limiter.aclose()
            await state.http.aclose()
            await state.guards.aclose()
            state.recorder.close()
            if parts.telemetry is None:
                telemetry.shutdown()

    route_handlers: list[Any] = [CompletionsController, create_embeddings, list_models, healthz, readyz]
    if settings.telemetry.metrics_port is None:
        route_handlers.append(
            metrics_route(state.recorder.metrics, read_secret_file(settings.telemetry.metrics_token_file))
        )
    if issuer is not None:
        route_handlers.append(oauth_router(issuer))
    app = Litestar(
        route_handlers=route_handlers,
        dependencies={
            "gateway": Provide(lambda: state, sync_to_thread=False, use_cache=True),
            "relay": Provide(lambda: relay, sync_to_thread=False, use_cache=True),
            "embeddings": Provide(lambda: embeddings, sync_to_thread=False, use_cache=True),
        },
        exception_handlers={GatewayError: _gateway_error, HTTPException: _http_error, Exception: _unexpected},
        lifespan=[lifespan],
        plugins=list(parts.extra_plugins),
        request_max_body_size=settings.server.max_body_bytes,
        openapi_config=None,
        # The gateway configures logging itself (JSON with the scrubber); Litestar's default would replace it.
        logging_config=None,
        debug=False,
    )
    # Around everything Litestar answers (unknown paths and methods included), so no request goes unlogged
    # or untraced; the server span inside the access log, which reads its trace id.
    handler: Any = app.asgi_handler
    server_span = server_span_middleware(telemetry)
    if server_span is not None:
        handler = server_span(handler)
    app.asgi_handler = cast("ASGIApp", AccessLogMiddleware(EdgeMiddleware(handler, edge_config(settings))))
    return app


async def _refresh_gauges(state: GatewayState, interval_s: float = 5.0) -> None:
    """Gauges read from other parts' state (engines, limiter), so that every scrape path sees them.

    ``engine_up`` is 1 only when every engine is up; restarts are summed over the supervised engines."""
    metrics = state.recorder.metrics
    restarts_seen = undone_seen = undo_failed_seen = 0
    while True:
        upstreams = state.upstreams.upstreams
        supervisors = [u.supervisor for u in upstreams if u.supervisor is not None]
        if supervisors:
            metrics.set_engine_up(all(s.up for s in supervisors))
            restarts = sum(s.restarts for s in supervisors)
            if restarts > restarts_seen:
                metrics.engine_restarts.inc(restarts - restarts_seen)
                restarts_seen = restarts
        else:
            checks = await asyncio.gather(*(u.client.health() for u in upstreams))
            metrics.set_engine_up(all(problem is None for problem in checks))
        status = state.limiter.status()
        metrics.set_redis_fallback(status.degraded)
        # Counters from the limiter's running totals: only what happened since the last look is added.
        metrics.ratelimit_undo.labels(result="undone").inc(status.undone - undone_seen)
        metrics.ratelimit_undo.labels(result="failed").inc(status.undo_failures - undo_failed_seen)
        undone_seen, undo_failed_seen = status.undone, status.undo_failures
        await asyncio.sleep(interval_s)


def _gateway_error(_request: Request[Any, Any, Any], exc: GatewayError) -> Response[bytes]:
    return Response(exc.encode(), status_code=exc.status, headers=exc.headers, media_type="application/json")


def _http_error(_request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    status = exc.status_code
    if status == 413:
        message = "The request body is too large."
    elif status == 400:
        message = f"Invalid request: {exc.detail}"
    else:
        message = str(exc.detail)
    body = error_json(status, message, _STATUS_TYPES.get(status, "error"), code=f"http_{status}")
    return Response(body, status_code=status, headers=exc.headers or None, media_type="application/json")


def _unexpected(_request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    # Logged with its type only; the traceback could quote request data.
    log.error("unexpected error: %s", type(exc).__name__)
    body = error_json(500, "Internal gateway error.", "internal_error", code="internal_error")
    return Response(body, status_code=500, media_type="application/json")


__all__ = ["AppParts", "build_state", "create_app"]
