"""Run the app under uvicorn with the gateway's logging and tracing."""

from __future__ import annotations

import logging
import sys

import uvicorn

from gateway.app import AppParts, create_app
from gateway.policy.problems import PolicyLoadError
from gateway.settings import Settings, read_secret_file
from gateway.telemetry.logging import configure_logging
from gateway.telemetry.scrub import Scrubber
from gateway.telemetry.spans import Telemetry
from gateway.telemetry.tracing import TracingConfigError, setup_tracing

log = logging.getLogger("menshen")


def prepare(settings: Settings, parts: AppParts | None = None) -> tuple[uvicorn.Server, Telemetry] | None:
    """Logging, tracing and the app; None (after printing every problem) when something is invalid."""
    parts = parts or AppParts()
    secrets = [
        s for s in (parts.engine_api_key, read_secret_file(settings.engine.upstream_api_key_file)) if s
    ]
    configure_logging(
        settings.telemetry.log_level,
        json=settings.telemetry.log_json is not False,
        scrubber=Scrubber(literals=secrets),
    )
    try:
        telemetry = Telemetry(setup_tracing("menshen"))
    except TracingConfigError as exc:
        print(f"gateway: invalid OpenTelemetry settings: {exc}", file=sys.stderr)
        return None
    parts.telemetry = telemetry
    try:
        app = create_app(settings, parts)
    except PolicyLoadError as exc:
        print(
            f"gateway: the policy bundle {settings.policies} is invalid; refusing to start:", file=sys.stderr
        )
        for problem in exc.errors:
            print(f"  {problem}", file=sys.stderr)
        return None
    except ValueError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return None
    if "none" in settings.auth.modes:
        log.warning("AUTHENTICATION IS DISABLED (--auth none); loopback only, for local development")
    config = uvicorn.Config(
        app,
        host=settings.server.host,
        port=settings.server.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
        server_header=False,
    )
    return uvicorn.Server(config), telemetry


def run_server(settings: Settings) -> int:
    prepared = prepare(settings)
    if prepared is None:
        return 2
    server, telemetry = prepared
    try:
        server.run()
    finally:
        telemetry.shutdown()
    return 0


__all__ = ["prepare", "run_server"]
