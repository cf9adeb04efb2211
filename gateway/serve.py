"""Run the app under uvicorn with the gateway's logging and tracing; SIGINT/SIGTERM end it quietly.

With ``--workers N`` (N > 1) this process is the parent of N gateway workers (``gateway.workers``).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Iterable, Sequence
from types import FrameType

import uvicorn
from litestar import Litestar

from gateway.app import AppParts, create_app
from gateway.edge.protocol import ConnectionLimits, edge_protocol
from gateway.policy.problems import PolicyLoadError
from gateway.settings import Settings, read_secret_file
from gateway.telemetry.logging import configure_logging
from gateway.telemetry.scrub import Scrubber
from gateway.telemetry.spans import Telemetry
from gateway.telemetry.tracing import TracingConfigError, setup_tracing

log = logging.getLogger("menshen")


class StopSignals:
    """SIGINT and SIGTERM stop the service without a traceback, whatever phase it is in.

    uvicorn handles both while it serves, then re-raises each one it caught to the handler it found
    before: with Python's defaults that ends in a ``KeyboardInterrupt`` traceback (SIGINT) or in death
    by SIGTERM before the engine is stopped. These handlers are the ones it finds: a signal asks the
    server to exit (a second one forces it) and wakes whoever waits for it. They stay installed until
    the process ends, so that a Ctrl-C typed during the shutdown cannot raise either.
    """

    def __init__(self) -> None:
        self.received = 0
        self.server: uvicorn.Server | None = None
        self._wake: Callable[[], object] | None = None

    def install(self) -> StopSignals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)
        return self

    def wake(self, event: asyncio.Event) -> None:
        """Set ``event`` (from the running loop) when a signal arrives, or now if one has."""
        loop = asyncio.get_running_loop()
        self._wake = lambda: loop.call_soon_threadsafe(event.set)
        if self.received:
            event.set()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        # Runs between two bytecodes of the main thread: set flags, and reach the loop only through
        # its thread-safe door.
        self.received += 1
        if self.server is not None:
            self.server.force_exit = self.server.force_exit or self.received > 1
            self.server.should_exit = True
        if self._wake is not None:
            try:
                self._wake()
            except RuntimeError:  # the loop is closed: nothing is waiting any more
                self._wake = None


def configure_logging_for(settings: Settings, secrets: Iterable[str | None] = ()) -> None:
    """The gateway's logging, with the engine key and other ``secrets`` scrubbed from every line."""
    literals = [s for s in (*secrets, read_secret_file(settings.engine.upstream_api_key_file)) if s]
    configure_logging(
        settings.telemetry.log_level, json=settings.telemetry.log_json, scrubber=Scrubber(literals=literals)
    )


def prepare(
    settings: Settings, parts: AppParts | None = None, *, headers: Sequence[tuple[str, str]] = ()
) -> tuple[uvicorn.Server, Telemetry] | None:
    """Logging, tracing and the app; None (after printing every problem) when something is invalid.

    ``headers`` go on every response (uvicorn adds them when it starts one: nothing per chunk).
    """
    parts = parts or AppParts()
    configure_logging_for(settings, [parts.engine_api_key, *(sup.api_key for sup in parts.supervisors)])
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
    return uvicorn.Server(server_config(app, settings, headers)), telemetry


def server_config(
    app: Litestar, settings: Settings, headers: Sequence[tuple[str, str]] = ()
) -> uvicorn.Config:
    """uvicorn's configuration: the edge's connection bounds (docs/operations/edge.md) and logging off.

    ``headers`` go on every response (uvicorn adds them when it starts one: nothing per chunk).
    """
    server = settings.server
    limits = ConnectionLimits(
        header_timeout_s=server.header_timeout,
        max_header_bytes=server.max_header_bytes,
        max_connections=server.max_connections,
    )
    return uvicorn.Config(
        app,
        host=server.host,
        port=server.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
        server_header=False,
        headers=list(headers),
        # h11, not httptools: only h11 bounds the size of a request's headers.
        http=edge_protocol(limits),
        h11_max_incomplete_event_size=server.max_header_bytes,
        ws="none",  # no WebSocket routes; an upgrade would leave the edge's protocol
        timeout_keep_alive=server.keepalive_timeout,
        backlog=server.backlog,
        # X-Forwarded-For/-Proto only from configured proxies: uvicorn trusts loopback by default.
        proxy_headers=server.forwarded_allow_ips is not None,
        forwarded_allow_ips=server.forwarded_allow_ips or [],
    )


def run_server(settings: Settings) -> int:
    """``gateway serve`` in one process: 0 after SIGINT/SIGTERM, 2 when the configuration is invalid.

    With ``--workers N`` (N > 1) the CLI runs ``gateway.workers.run_node`` instead, which builds on this module.
    """
    signals = StopSignals().install()
    prepared = prepare(settings)
    if prepared is None:
        return 2
    server, telemetry = prepared
    signals.server = server
    try:
        if not signals.received:
            with asyncio.Runner(loop_factory=server.config.get_loop_factory()) as runner:
                runner.run(server.serve())
    finally:
        telemetry.shutdown()
    return 0


__all__ = ["StopSignals", "configure_logging_for", "prepare", "run_server", "server_config"]
