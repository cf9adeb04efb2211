"""The tracer provider: the OpenTelemetry SDK's, configured by the standard ``OTEL_*`` variables.

Tracing is off unless configured: with ``OTEL_SDK_DISABLED=true``, or with no ``OTEL_TRACES_EXPORTER`` and
no OTLP endpoint, ``setup_tracing`` returns ``None`` and the gateway runs without a tracer. Otherwise the
SDK's ``TracerProvider`` gets, per exporter named in ``OTEL_TRACES_EXPORTER`` (``otlp``, ``console``,
``none``; default ``otlp`` when an OTLP endpoint is set):

* ``otlp``: a ``BatchSpanProcessor`` (``OTEL_BSP_*``) with the SDK's OTLP exporter for
  ``OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL``, ``http/protobuf`` (default) or ``grpc``. The exporter reads
  its endpoint, headers, timeout, compression and TLS variables itself.
* ``console``: spans printed to stdout as they end (development only).

The SDK reads ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` (``service.name`` defaults to
``menshen``) and ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG``. **When ``OTEL_TRACES_SAMPLER`` is
unset, the sampler is ``parentbased_traceidratio`` with ratio 0.1**: one request in ten starts a trace, and
a caller's sampled ``traceparent`` is always continued. Set ``OTEL_TRACES_SAMPLER=parentbased_always_on``
(or ``OTEL_TRACES_SAMPLER_ARG=1`` with the ratio sampler) to trace every request.

The SDK falls back to defaults, with a log line, on values it cannot use; ``check_tracing_environment``
instead lists every such problem at start-up (``TracingConfigError``), without echoing header values,
which carry credentials. Importing this module changes nothing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Final
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, Sampler, TraceIdRatioBased

DEFAULT_SERVICE_NAME: Final = "menshen"
DEFAULT_SAMPLER_RATIO: Final = 0.1
_EXPORTERS: Final = frozenset({"otlp", "console", "none"})
_PROTOCOLS: Final = frozenset({"http/protobuf", "grpc"})
_SAMPLERS: Final = frozenset(
    {
        "always_on",
        "always_off",
        "traceidratio",
        "parentbased_always_on",
        "parentbased_always_off",
        "parentbased_traceidratio",
    }
)
_ENDPOINTS: Final = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
_HEADERS: Final = ("OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS")
_PROTOCOL_VARS: Final = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
# Numbers the SDK and the exporters read (milliseconds, sizes, seconds).
_NUMBERS: Final = (
    "OTEL_BSP_SCHEDULE_DELAY",
    "OTEL_BSP_EXPORT_TIMEOUT",
    "OTEL_BSP_MAX_QUEUE_SIZE",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
)


class TracingConfigError(ValueError):
    """The OTEL_* variables are invalid; ``problems`` lists every one of them."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid tracing configuration: " + "; ".join(problems))


def _names(value: str) -> list[str]:
    return [n.strip().lower() for n in value.split(",") if n.strip()]


def check_tracing_environment(env: Mapping[str, str]) -> list[str]:
    """Every setting in ``env`` the SDK would silently replace by a default, or fail on; [] when all is well."""
    problems = [
        f"OTEL_TRACES_EXPORTER: unknown exporter {name!r} (use otlp, console or none)"
        for name in _names(env.get("OTEL_TRACES_EXPORTER", ""))
        if name not in _EXPORTERS
    ]
    for var in _PROTOCOL_VARS:
        protocol = env.get(var, "").strip()
        if protocol and protocol not in _PROTOCOLS:
            problems.append(f"{var}={protocol!r}: use http/protobuf or grpc")
    for var in _ENDPOINTS:
        endpoint = env.get(var, "").strip()
        if not endpoint:
            continue
        try:
            url = urlsplit(endpoint)
            # ``port`` raises on a port that is not a number.
            valid = url.scheme in ("http", "https") and bool(url.hostname) and (url.port or 0) >= 0
        except ValueError:
            valid = False
        if not valid:
            shown = repr(endpoint) if "@" not in endpoint else "(value not shown)"
            problems.append(f"{var}={shown}: not an http:// or https:// URL with a host")
    for var in _HEADERS:
        for n, item in enumerate(filter(None, (p.strip() for p in env.get(var, "").split(","))), 1):
            key, sep, _value = item.partition("=")
            if not sep or not key.strip():
                # Never echo the entry: headers carry credentials.
                problems.append(f"{var}: entry {n} is not 'key=value'")
    sampler = env.get("OTEL_TRACES_SAMPLER", "").strip().lower()
    if sampler and sampler not in _SAMPLERS:
        problems.append(f"OTEL_TRACES_SAMPLER: unknown sampler {sampler!r}")
    arg = env.get("OTEL_TRACES_SAMPLER_ARG", "").strip()
    if arg and (not sampler or sampler.endswith("traceidratio")):
        try:
            ratio = float(arg)
        except ValueError:
            problems.append(f"OTEL_TRACES_SAMPLER_ARG={arg!r}: not a number")
        else:
            if not 0.0 <= ratio <= 1.0:
                problems.append(f"OTEL_TRACES_SAMPLER_ARG={arg!r}: must be within [0, 1]")
    for var in _NUMBERS:
        raw = env.get(var, "").strip()
        if raw and not (raw.isdigit() or (var.endswith("_TIMEOUT") and _is_number(raw))):
            problems.append(f"{var}={raw!r}: not a non-negative number")
    return problems


def _is_number(raw: str) -> bool:
    try:
        return float(raw) >= 0
    except ValueError:
        return False


def default_sampler(env: Mapping[str, str]) -> Sampler | None:
    """The gateway's default when ``OTEL_TRACES_SAMPLER`` is unset; ``None`` lets the SDK read the variables.

    ``OTEL_TRACES_SAMPLER_ARG`` alone sets the default sampler's ratio.
    """
    if env.get("OTEL_TRACES_SAMPLER", "").strip():
        return None
    arg = env.get("OTEL_TRACES_SAMPLER_ARG", "").strip()
    return ParentBased(TraceIdRatioBased(float(arg) if arg else DEFAULT_SAMPLER_RATIO))


def _exporters(env: Mapping[str, str]) -> list[str]:
    names = _names(env.get("OTEL_TRACES_EXPORTER", ""))
    if not names:  # not the spec's "otlp": an unconfigured gateway must not send spans to localhost
        names = ["otlp"] if any(env.get(var, "").strip() for var in _ENDPOINTS) else []
    return [name for name in dict.fromkeys(names) if name != "none"]


def _processor(name: str, env: Mapping[str, str]) -> SpanProcessor:
    if name == "console":
        return SimpleSpanProcessor(ConsoleSpanExporter())
    # Imported here: the exporters pull in requests and grpc, which a gateway without tracing never needs.
    protocol = next((env[v].strip() for v in _PROTOCOL_VARS if env.get(v, "").strip()), "http/protobuf")
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return BatchSpanProcessor(GrpcExporter())
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    return BatchSpanProcessor(HttpExporter())


def _resource(service_name: str | None) -> Resource:
    resource = Resource.create()  # OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: service_name or DEFAULT_SERVICE_NAME}))
    return resource


def setup_tracing(
    service_name: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    set_global: bool = True,
) -> TracerProvider | None:
    """The SDK tracer provider the ``OTEL_*`` variables describe, or ``None`` when tracing is off.

    ``service_name`` is used when the variables name none. ``environ`` (default: the process environment)
    is what is checked and decides whether tracing is on and with which exporters; the SDK and its exporters
    read the process environment themselves. With ``set_global`` the provider also becomes OpenTelemetry's
    global one (once per process). Call ``shutdown()`` at exit to flush pending spans.
    Raises ``TracingConfigError`` listing every invalid setting.
    """
    env = os.environ if environ is None else environ
    problems = check_tracing_environment(env)
    if problems:
        raise TracingConfigError(problems)
    exporters = _exporters(env)
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true" or not exporters:
        return None
    provider = TracerProvider(sampler=default_sampler(env), resource=_resource(service_name))
    for name in exporters:
        provider.add_span_processor(_processor(name, env))
    if set_global:
        trace.set_tracer_provider(provider)
    return provider


__all__ = [
    "DEFAULT_SAMPLER_RATIO",
    "DEFAULT_SERVICE_NAME",
    "TracingConfigError",
    "check_tracing_environment",
    "default_sampler",
    "setup_tracing",
]
