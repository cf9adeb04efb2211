from __future__ import annotations

import pytest
from opentelemetry.sdk.trace.sampling import ParentBased, StaticSampler, TraceIdRatioBased

from gateway.telemetry import TracingConfig, TracingConfigError, setup_tracing


def test_nothing_configured_means_tracing_off() -> None:
    assert TracingConfig.from_env({}).enabled is False
    assert setup_tracing(environ={}, set_global=False) is None


def test_sdk_disabled_wins_over_an_endpoint() -> None:
    env = {"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}
    assert setup_tracing(environ=env, set_global=False) is None


def test_base_endpoint_gets_the_traces_path_over_http_only() -> None:
    http = TracingConfig.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"})
    assert http.exporters == ("otlp",)
    assert http.endpoint == "http://collector:4318/v1/traces"
    grpc = TracingConfig.from_env(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    )
    assert (grpc.protocol, grpc.endpoint) == ("grpc", "http://collector:4317")


def test_signal_specific_settings_override_the_generic_ones() -> None:
    cfg = TracingConfig.from_env(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://generic:4318",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://traces:9999/custom",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_HEADERS": "x-generic=1",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "Authorization=Basic%20abc,x-tenant = t1 ",
        }
    )
    assert cfg.endpoint == "http://traces:9999/custom"
    assert cfg.protocol == "http/protobuf"
    assert cfg.headers == {"authorization": "Basic abc", "x-tenant": "t1"}


def test_console_exporter_without_endpoint_and_none_is_dropped() -> None:
    cfg = TracingConfig.from_env({"OTEL_TRACES_EXPORTER": "console,none", "OTEL_SERVICE_NAME": "gw-a"})
    assert cfg.exporters == ("console",)
    assert TracingConfig.from_env({"OTEL_TRACES_EXPORTER": "none"}).enabled is False
    provider = setup_tracing(
        environ={"OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "gw-a"}, set_global=False
    )
    assert provider is not None
    assert provider.resource.attributes["service.name"] == "gw-a"
    provider.shutdown()


def test_service_name_argument_beats_the_environment() -> None:
    cfg = TracingConfig.from_env({"OTEL_SERVICE_NAME": "from-env"}, service_name="from-arg")
    assert cfg.service_name == "from-arg"


def test_samplers() -> None:
    default = TracingConfig.from_env({}).build_sampler()
    assert isinstance(default, ParentBased)
    ratio = TracingConfig.from_env(
        {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25"}
    ).build_sampler()
    assert isinstance(ratio, TraceIdRatioBased)
    assert ratio.rate == 0.25
    off = TracingConfig.from_env({"OTEL_TRACES_SAMPLER": "always_off"}).build_sampler()
    assert isinstance(off, StaticSampler)
    assert "AlwaysOff" in off.get_description()


def test_every_problem_is_reported_at_once_without_header_values() -> None:
    env = {
        "OTEL_TRACES_EXPORTER": "otlp,jaeger",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "collector:4318",
        "OTEL_EXPORTER_OTLP_HEADERS": "supersecretvalue",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "1.5",
    }
    with pytest.raises(TracingConfigError) as info:
        TracingConfig.from_env(env)
    problems = info.value.problems
    assert len(problems) == 5
    for needle in ("jaeger", "http/json", "collector:4318", "HEADERS", "1.5"):
        assert any(needle in p for p in problems), needle
    assert "supersecretvalue" not in str(info.value)
