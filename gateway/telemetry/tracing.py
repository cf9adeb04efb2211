"""Tracer provider set-up from the standard ``OTEL_*`` environment variables.

Tracing is off unless configured: with no ``OTEL_TRACES_EXPORTER`` and no OTLP endpoint,
``setup_tracing`` returns ``None`` and the gateway uses a no-op tracer. Importing this module
changes nothing; ``setup_tracing`` is the one place that installs the global tracer provider.

The OTLP exporters are the stock ones with a faster span encoder (``gateway.telemetry.otlp``).
Variables read here (the exporters themselves also read their TLS, compression and timeout
variables, ``OTEL_EXPORTER_OTLP_*_CERTIFICATE`` etc., from the process environment):

* ``OTEL_SDK_DISABLED=true``: off.
* ``OTEL_TRACES_EXPORTER``: comma list of ``otlp``, ``console``, ``none``. Default: ``otlp`` when
  an OTLP endpoint is set, else ``none``.
* ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (used as is) or ``OTEL_EXPORTER_OTLP_ENDPOINT`` (HTTP:
  ``/v1/traces`` appended). Defaults: ``http://localhost:4318/v1/traces``, ``http://localhost:4317``.
* ``OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL``: ``http/protobuf`` (default) or ``grpc``.
* ``OTEL_EXPORTER_OTLP_(TRACES_)HEADERS``: ``k=v,k2=v2`` (URL-encoded values).
* ``OTEL_SERVICE_NAME`` (default ``menshen``), ``OTEL_RESOURCE_ATTRIBUTES``.
* ``OTEL_TRACES_SAMPLER`` (default ``parentbased_always_on``) and ``OTEL_TRACES_SAMPLER_ARG``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal
from urllib.parse import unquote

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)

from gateway.telemetry.request_trace import RequestTracerProvider

Protocol = Literal["http/protobuf", "grpc"]
DEFAULT_SERVICE_NAME: Final = "menshen"
_EXPORTERS: Final = frozenset({"otlp", "console", "none"})
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


class TracingConfigError(ValueError):
    """The OTEL_* variables are invalid; ``problems`` lists every one of them."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid tracing configuration: " + "; ".join(problems))


@dataclass(frozen=True, slots=True)
class TracingConfig:
    exporters: tuple[str, ...] = ()
    protocol: Protocol = "http/protobuf"
    endpoint: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    service_name: str = DEFAULT_SERVICE_NAME
    sampler: str = "parentbased_always_on"
    sampler_ratio: float = 1.0

    @property
    def enabled(self) -> bool:
        return bool(self.exporters)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, service_name: str | None = None
    ) -> TracingConfig:
        """Read the variables; raise ``TracingConfigError`` naming every invalid one."""
        env = os.environ if environ is None else environ
        problems: list[str] = []
        name = service_name or env.get("OTEL_SERVICE_NAME") or DEFAULT_SERVICE_NAME
        if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
            return cls(service_name=name)

        protocol_raw = (
            env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            or "http/protobuf"
        ).strip()
        protocol: Protocol = "http/protobuf"
        if protocol_raw == "grpc":
            protocol = "grpc"
        elif protocol_raw != "http/protobuf":
            problems.append(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol_raw!r}: use http/protobuf or grpc")

        signal_endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
        base_endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
        endpoint: str | None = signal_endpoint or None
        if endpoint is None and base_endpoint:
            endpoint = base_endpoint if protocol == "grpc" else base_endpoint.rstrip("/") + "/v1/traces"
        if endpoint is not None and not endpoint.startswith(("http://", "https://")):
            problems.append(f"OTLP endpoint {endpoint!r}: must start with http:// or https://")

        exporters_raw = env.get("OTEL_TRACES_EXPORTER", "").strip()
        if exporters_raw:
            names = [n.strip().lower() for n in exporters_raw.split(",") if n.strip()]
            problems += [
                f"OTEL_TRACES_EXPORTER: unknown exporter {n!r}" for n in names if n not in _EXPORTERS
            ]
            exporters = tuple(dict.fromkeys(n for n in names if n in _EXPORTERS and n != "none"))
        else:
            exporters = ("otlp",) if endpoint else ()

        headers_raw = (
            env.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS") or env.get("OTEL_EXPORTER_OTLP_HEADERS") or ""
        )
        headers: dict[str, str] = {}
        for n, item in enumerate(filter(None, (p.strip() for p in headers_raw.split(","))), 1):
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                # Never echo the entry: headers carry credentials.
                problems.append(f"OTEL_EXPORTER_OTLP_HEADERS: entry {n} is not 'key=value'")
                continue
            headers[unquote(key.strip()).lower()] = unquote(value.strip())

        sampler = env.get("OTEL_TRACES_SAMPLER", "parentbased_always_on").strip().lower()
        if sampler not in _SAMPLERS:
            problems.append(f"OTEL_TRACES_SAMPLER: unknown sampler {sampler!r}")
        ratio = 1.0
        arg = env.get("OTEL_TRACES_SAMPLER_ARG", "").strip()
        if arg and sampler.endswith("traceidratio"):
            try:
                ratio = float(arg)
            except ValueError:
                problems.append(f"OTEL_TRACES_SAMPLER_ARG={arg!r}: not a number")
            else:
                if not 0.0 <= ratio <= 1.0:
                    problems.append(f"OTEL_TRACES_SAMPLER_ARG={arg!r}: must be within [0, 1]")

        if problems:
            raise TracingConfigError(problems)
        return cls(
            exporters=exporters,
            protocol=protocol,
            endpoint=endpoint,
            headers=headers,
            service_name=name,
            sampler=sampler,
            sampler_ratio=ratio,
        )

    def build_root_sampler(self) -> Sampler:
        """The sampler of traces this service starts (the one inside ``ParentBased`` if it is one)."""
        if self.sampler.endswith("always_off"):
            return ALWAYS_OFF
        if self.sampler.endswith("traceidratio"):
            return TraceIdRatioBased(self.sampler_ratio)
        return ALWAYS_ON

    def build_sampler(self) -> Sampler:
        root = self.build_root_sampler()
        return ParentBased(root) if self.sampler.startswith("parentbased_") else root


def _processor(config: TracingConfig, exporter_name: str) -> SpanProcessor:
    if exporter_name == "console":
        # Development only: synchronous, one JSON document per span on stdout.
        return SimpleSpanProcessor(ConsoleSpanExporter())
    # Imported here: the exporters pull in requests and grpc, which a gateway without tracing never needs.
    from gateway.telemetry.otlp_exporters import (
        GrpcSpanExporter,
        HttpSpanExporter,
        RequestBatchSpanProcessor,
    )

    headers = config.headers or None
    if config.protocol == "grpc":
        return RequestBatchSpanProcessor(GrpcSpanExporter(endpoint=config.endpoint, headers=headers))
    return RequestBatchSpanProcessor(HttpSpanExporter(endpoint=config.endpoint, headers=headers))


def setup_tracing(
    service_name: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    set_global: bool = True,
) -> RequestTracerProvider | None:
    """Build the tracer provider the ``OTEL_*`` variables describe, or ``None`` when tracing is off.

    With ``set_global`` (the default) the provider also becomes OpenTelemetry's global one, which
    can happen once per process. Call ``provider.shutdown()`` at exit to flush pending spans.
    Raises ``TracingConfigError`` listing every invalid variable.
    """
    config = TracingConfig.from_env(environ, service_name)
    if not config.enabled:
        return None
    provider = RequestTracerProvider(
        root_sampler=config.build_root_sampler(),
        sampler=config.build_sampler(),
        resource=Resource.create({SERVICE_NAME: config.service_name}),
    )
    for name in config.exporters:
        provider.add_span_processor(_processor(config, name))
    if set_global:
        trace.set_tracer_provider(provider)
    return provider


__all__ = ["DEFAULT_SERVICE_NAME", "TracingConfig", "TracingConfigError", "setup_tracing"]
