"""setup_tracing: the SDK's provider from the OTEL_* variables, the start-up check and the default sampler."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

from gateway.telemetry import TracingConfigError, check_tracing_environment, setup_tracing

Build = Callable[..., TracerProvider | None]


@pytest.fixture(autouse=True)
def clean_otel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)


@pytest.fixture
def build(monkeypatch: pytest.MonkeyPatch) -> Iterator[Build]:
    """setup_tracing with these variables in the process environment (which the SDK reads)."""
    providers: list[TracerProvider] = []

    def make(service_name: str | None = None, **env: str) -> TracerProvider | None:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        provider = setup_tracing(service_name, set_global=False)
        if provider is not None:
            providers.append(provider)
        return provider

    yield make
    for provider in providers:
        provider.shutdown()


def _console(build: Build, **env: str) -> TracerProvider:
    provider = build(OTEL_TRACES_EXPORTER="console", **env)
    assert provider is not None
    return provider


def _sampled(provider: TracerProvider, trace_id: int, parent_sampled: bool | None = None) -> bool:
    parent = None
    if parent_sampled is not None:
        flags = TraceFlags(TraceFlags.SAMPLED if parent_sampled else 0)
        span = NonRecordingSpan(SpanContext(trace_id, 0x1234, is_remote=True, trace_flags=flags))
        parent = set_span_in_context(span)
    result = provider.sampler.should_sample(parent, trace_id, "POST /v1/chat/completions")
    return result.decision is Decision.RECORD_AND_SAMPLE


def test_nothing_configured_means_tracing_off(build: Build) -> None:
    assert setup_tracing(environ={}, set_global=False) is None
    assert build() is None


def test_sdk_disabled_and_exporter_none_win_over_an_endpoint(build: Build) -> None:
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}
    assert setup_tracing(environ={**endpoint, "OTEL_SDK_DISABLED": "true"}, set_global=False) is None
    assert setup_tracing(environ={**endpoint, "OTEL_TRACES_EXPORTER": "none"}, set_global=False) is None


def test_an_endpoint_alone_turns_otlp_export_on(build: Build) -> None:
    provider = build(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:4318")
    assert isinstance(provider, TracerProvider)


def test_default_sampler_is_parent_based_ratio_one_in_ten(build: Build) -> None:
    provider = _console(build)
    assert provider.sampler.get_description().startswith("ParentBased{root:TraceIdRatioBased{0.1},")
    low, high = 1, (1 << 128) - 1  # the ratio sampler keeps trace ids whose low 64 bits are small
    assert _sampled(provider, low) and not _sampled(provider, high)
    # A caller's decision is continued, whichever way it went.
    assert _sampled(provider, high, parent_sampled=True)
    assert not _sampled(provider, low, parent_sampled=False)


def test_sampler_arg_alone_sets_the_default_ratio_and_a_named_sampler_is_the_sdks(build: Build) -> None:
    every = _console(build, OTEL_TRACES_SAMPLER_ARG="1")
    assert _sampled(every, (1 << 128) - 1)
    always = _console(build, OTEL_TRACES_SAMPLER="always_off")
    assert "AlwaysOff" in always.sampler.get_description()


def test_service_name_from_the_environment_else_the_argument(build: Build) -> None:
    assert _console(build).resource.attributes["service.name"] == "menshen"
    named = build("gw-arg", OTEL_TRACES_EXPORTER="console")
    assert named is not None
    assert named.resource.attributes["service.name"] == "gw-arg"
    env = build("gw-arg", OTEL_SERVICE_NAME="gw-env", OTEL_RESOURCE_ATTRIBUTES="deployment.environment=test")
    assert env is not None
    assert env.resource.attributes["service.name"] == "gw-env"
    assert env.resource.attributes["deployment.environment"] == "test"


def test_every_problem_is_reported_at_once_without_header_values() -> None:
    env = {
        "OTEL_TRACES_EXPORTER": "otlp,jaeger",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "collector:4318",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "https://user:pa55word@collector:x",
        "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20ok,supersecretvalue",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "1.5",
        "OTEL_BSP_SCHEDULE_DELAY": "soon",
    }
    with pytest.raises(TracingConfigError) as info:
        setup_tracing(environ=env, set_global=False)
    problems = info.value.problems
    assert len(problems) == 7, problems
    for needle in (
        "jaeger",
        "http/json",
        "collector:4318",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "entry 2",
        "1.5",
        "soon",
    ):
        assert any(needle in p for p in problems), needle
    for secret in ("supersecretvalue", "pa55word", "Bearer"):
        assert secret not in str(info.value)
    assert check_tracing_environment({"OTEL_TRACES_SAMPLER": "nope"}) == [
        "OTEL_TRACES_SAMPLER: unknown sampler 'nope'"
    ]
    assert check_tracing_environment({"OTEL_TRACES_SAMPLER_ARG": "-0.1"})  # the default sampler's ratio too


def test_a_valid_configuration_has_no_problems() -> None:
    env = {
        "OTEL_TRACES_EXPORTER": "otlp,console",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://collector.internal:4317",
        "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Basic%20abc, x-tenant = t1 ",
        "OTEL_TRACES_SAMPLER": "always_on",
        "OTEL_TRACES_SAMPLER_ARG": "ignored by always_on",
        "OTEL_BSP_SCHEDULE_DELAY": "500",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "2.5",
    }
    assert check_tracing_environment(env) == []
