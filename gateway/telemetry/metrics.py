"""Prometheus metrics of the gateway, on a registry owned by one ``Metrics`` object.

With several worker processes (``gateway serve --workers N``), the parent sets ``PROMETHEUS_MULTIPROC_DIR``
before it starts them: every worker's values then live in files there (prometheus-client's multiprocess
mode), and ``render()`` of any worker reads all of them, so a scrape sees the whole node and each request
counted once. Gauges say how workers combine (``multiprocess_mode``); ``live*`` modes forget a worker
once the parent marks it dead.

Label values that come from outside (client ids, routes, rule ids, reasons) go through a
``LabelFold``: the first ``limit`` distinct values keep their name, later ones become ``other``,
so a flood of new client ids or paths cannot grow the series without bound. Client ids named in
the policy are always kept (``set_known_clients``). Nothing here runs per streamed chunk.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import socketserver
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, make_wsgi_app
from prometheus_client.exposition import CONTENT_TYPE_LATEST as _TEXT_CONTENT_TYPE
from prometheus_client.exposition import choose_encoder, generate_latest, start_http_server
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

OTHER: Final = "other"
MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
_MAX_LABEL_CHARS: Final = 64
# Seconds; LLM requests run from milliseconds (refusals) to minutes (long generations).
LATENCY_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
TTFT_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 2, 4, 8, 15, 30)


class LabelFold:
    """Bounded set of label values: new values beyond ``limit`` fold into ``other``."""

    __slots__ = ("_known", "_limit", "_lock", "_seen")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._known: frozenset[str] = frozenset()
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def set_known(self, values: Iterable[str]) -> None:
        """Values always kept as they are (e.g. client ids of the policy); not counted in the limit."""
        self._known = frozenset(v[:_MAX_LABEL_CHARS] for v in values)

    def __call__(self, value: str | None) -> str:
        if not value:
            return "none"
        value = value[:_MAX_LABEL_CHARS]
        if value in self._known or value in self._seen:
            return value
        with self._lock:
            if len(self._seen) < self._limit:
                self._seen.add(value)
                return value
        return OTHER


@dataclass(frozen=True, slots=True)
class MetricsServer:
    """A metrics endpoint on its own port; ``close()`` stops it."""

    host: str
    port: int
    _server: object
    _thread: threading.Thread

    def close(self) -> None:
        self._server.shutdown()  # type: ignore[attr-defined]
        self._server.server_close()  # type: ignore[attr-defined]
        self._thread.join(timeout=5)


class Metrics:
    """All gateway metrics. Create one per app; ``render()`` serves ``GET /metrics``."""

    def __init__(
        self,
        *,
        namespace: str = "menshen",
        max_clients: int = 200,
        max_routes: int = 32,
        max_rules: int = 256,
        max_reasons: int = 32,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # Read at construction, not import: the parent of the workers sets it before starting them.
        self.multiprocess_dir = os.environ.get(MULTIPROC_ENV) or None
        self._exposed = self.registry
        if self.multiprocess_dir is not None:
            self._exposed = CollectorRegistry()
            MultiProcessCollector(self._exposed, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        self.clients = LabelFold(max_clients)
        self._routes = LabelFold(max_routes)
        self._rules = LabelFold(max_rules)
        self._reasons = LabelFold(max_reasons)
        ns, reg = namespace, self.registry

        self.requests = Counter(
            "requests",
            "Requests by route, status and client.",
            ["route", "status", "client"],
            namespace=ns,
            registry=reg,
        )
        self.latency = Histogram(
            "request_duration_seconds",
            "Request latency, to the last byte.",
            ["route"],
            namespace=ns,
            registry=reg,
            buckets=LATENCY_BUCKETS,
        )
        self.ttft = Histogram(
            "time_to_first_token_seconds",
            "Time from request to the first generated token sent.",
            ["route"],
            namespace=ns,
            registry=reg,
            buckets=TTFT_BUCKETS,
        )
        self.tokens = Counter(
            "tokens",
            "Tokens by type (input, output) and client.",
            ["type", "client"],
            namespace=ns,
            registry=reg,
        )
        self.guard_calls = Counter(
            "guard_calls",
            "Guard model and webhook calls by rule and outcome (allow, flag, block, cached, or an error).",
            ["rule", "outcome"],
            namespace=ns,
            registry=reg,
        )
        self.guard_breaker_open = Gauge(
            "guard_breaker_open",
            "1 while a guard rule's circuit breaker is open or half-open (on_error applies without a call).",
            ["rule"],
            namespace=ns,
            registry=reg,
            multiprocess_mode="max",
        )
        self.guardrail_hits = Counter(
            "guardrail_hits",
            "Guardrail decisions by rule, action, mode and where.",
            ["rule", "action", "mode", "where"],
            namespace=ns,
            registry=reg,
        )
        self.loops_cut = Counter(
            "loops_cut", "Streams cut by the loop detector.", ["where"], namespace=ns, registry=reg
        )
        self.rate_limited = Counter(
            "rate_limited", "Requests refused with 429, by limit.", ["limit"], namespace=ns, registry=reg
        )
        self.auth_failures = Counter(
            "auth_failures",
            "Authentication/authorisation failures by reason.",
            ["reason"],
            namespace=ns,
            registry=reg,
        )
        self.engine_up = Gauge(
            "engine_up",
            "1 when the engine is ready, else 0.",
            namespace=ns,
            registry=reg,
            multiprocess_mode="livemax",
        )
        self.engine_restarts = Counter("engine_restarts", "Engine restarts.", namespace=ns, registry=reg)
        self.policy_reloads = Counter(
            "policy_reloads",
            "Policy reloads by result (success, failure).",
            ["result"],
            namespace=ns,
            registry=reg,
        )
        self.policy: Info | Gauge
        if self.multiprocess_dir is None:
            self.policy = Info("policy", "The policy bundle in force.", namespace=ns, registry=reg)
        else:  # Info has no multiprocess mode: the same series as a gauge, 1 for the version in force
            self.policy = Gauge(
                "policy_info",
                "The policy bundle in force (1), and versions replaced since start (0).",
                ["version"],
                namespace=ns,
                registry=reg,
                multiprocess_mode="livemax",
            )
        self._policy_version: str | None = None
        self.redis_fallback = Gauge(
            "redis_fallback",
            "1 while rate limits use the local fallback instead of Redis.",
            namespace=ns,
            registry=reg,
            multiprocess_mode="livemax",
        )
        self.ratelimit_undo = Counter(
            "ratelimit_undo",
            "Redis admissions whose reply was lost, by result (undone, failed).",
            ["result"],
            namespace=ns,
            registry=reg,
        )
        self.audit_failures = Counter(
            "audit_failures", "Audit records that could not be written.", namespace=ns, registry=reg
        )
        self.audit_healthy = Gauge(
            "audit_healthy",
            "1 while the audit sink writes.",
            namespace=ns,
            registry=reg,
            multiprocess_mode="livemin",
        )
        self.audit_healthy.set(1)

    # --- recording ------------------------------------------------------------------------------

    def set_known_clients(self, client_ids: Iterable[str]) -> None:
        """Client ids of the policy in force: these always keep their own label."""
        self.clients.set_known(client_ids)

    def observe_request(self, *, route: str, status: int, client: str | None, duration_s: float) -> None:
        r = self._routes(route)
        self.requests.labels(r, str(status), self.clients(client)).inc()
        self.latency.labels(r).observe(duration_s)

    def observe_ttft(self, *, route: str, seconds: float) -> None:
        self.ttft.labels(self._routes(route)).observe(seconds)

    def add_tokens(self, *, client: str | None, input_tokens: int = 0, output_tokens: int = 0) -> None:
        c = self.clients(client)
        if input_tokens:
            self.tokens.labels("input", c).inc(input_tokens)
        if output_tokens:
            self.tokens.labels("output", c).inc(output_tokens)

    def guardrail_hit(self, *, rule: str, action: str, mode: str, where: str) -> None:
        self.guardrail_hits.labels(
            self._rules(rule), self._reasons(action), self._reasons(mode), self._reasons(where)
        ).inc()

    def guard_call(self, rule: str, outcome: str, breaker: str) -> None:
        name = self._rules(rule)
        self.guard_calls.labels(name, self._reasons(outcome)).inc()
        self.guard_breaker_open.labels(name).set(0 if breaker == "closed" else 1)

    def loop_cut(self, *, where: str) -> None:
        self.loops_cut.labels(self._reasons(where)).inc()

    def rate_limit_hit(self, *, limit: str) -> None:
        self.rate_limited.labels(self._reasons(limit)).inc()

    def auth_failure(self, *, reason: str) -> None:
        self.auth_failures.labels(self._reasons(reason)).inc()

    def set_engine_up(self, up: bool) -> None:
        self.engine_up.set(1 if up else 0)

    def engine_restart(self) -> None:
        self.engine_restarts.inc()

    def policy_reload(self, *, ok: bool, version: str | None = None) -> None:
        self.policy_reloads.labels("success" if ok else "failure").inc()
        if not ok or version is None:
            return
        version = version[:_MAX_LABEL_CHARS]
        if isinstance(self.policy, Info):
            self.policy.info({"version": version})
            return
        if self._policy_version not in (None, version):
            # Series cannot be removed in multiprocess mode: the replaced version drops to 0.
            self.policy.labels(self._policy_version).set(0)
        self.policy.labels(version).set(1)
        self._policy_version = version

    def set_redis_fallback(self, active: bool) -> None:
        self.redis_fallback.set(1 if active else 0)

    def audit_failure(self, healthy: bool = False) -> None:
        """Hook for ``AuditLog(on_failure=...)``."""
        self.audit_failures.inc()
        self.audit_healthy.set(1 if healthy else 0)

    def set_audit_healthy(self, healthy: bool) -> None:
        self.audit_healthy.set(1 if healthy else 0)

    # --- exposition -----------------------------------------------------------------------------

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """Body and content type for ``GET /metrics``; OpenMetrics when ``accept`` asks for it."""
        if accept:
            encoder, content_type = choose_encoder(accept)
            return encoder(self._exposed), content_type
        return generate_latest(self._exposed), _TEXT_CONTENT_TYPE

    def serve_metrics(self, host: str, port: int) -> MetricsServer:
        """Serve this registry on its own port (a daemon thread); ``port=0`` picks a free one.

        In multiprocess mode every worker binds the port with ``SO_REUSEPORT`` and serves the whole node.
        """
        if self.multiprocess_dir is None:
            server, thread = start_http_server(port, addr=host, registry=self.registry)
            return MetricsServer(host, server.server_port, server, thread)
        shared = make_server(
            host, port, make_wsgi_app(self._exposed), _SharedPortServer, handler_class=_QuietHandler
        )
        thread = threading.Thread(target=shared.serve_forever, daemon=True, name="metrics-port")
        thread.start()
        return MetricsServer(host, shared.server_port, shared, thread)


class _SharedPortServer(socketserver.ThreadingMixIn, WSGIServer):
    """A WSGI server whose port the node's workers share; the kernel spreads scrapes over them."""

    daemon_threads = True
    allow_reuse_port = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Scrapes are not logged (the stdlib handler writes each one to stderr)."""


def bearer_matches(authorization: str | None, expected_token: str) -> bool:
    """Constant-time check of an ``Authorization: Bearer <token>`` header against ``expected_token``.

    Both sides are hashed first so that the comparison leaks neither content nor length.
    """
    if not authorization or not expected_token:
        return False
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    given = hashlib.sha256(token.strip().encode()).digest()
    wanted = hashlib.sha256(expected_token.encode()).digest()
    return hmac.compare_digest(given, wanted)


def mark_worker_dead(pid: int, directory: str) -> None:
    """Forget an ended worker's ``live*`` gauges (called by the parent that started it)."""
    mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]


__all__ = [
    "MULTIPROC_ENV",
    "OTHER",
    "LabelFold",
    "Metrics",
    "MetricsServer",
    "bearer_matches",
    "mark_worker_dead",
]
