"""Profiles to vLLM argv and environment: defaults per profile, overrides, validation."""

from __future__ import annotations

import pytest

from engine import PROFILES, EngineProfile, ProfileError, build_command, get_profile
from engine.profiles import normalise_arg_name


def _args(argv: tuple[str, ...]) -> dict[str, str | None]:
    """argv as a mapping: ``--name value`` -> value, a bare ``--flag`` -> None."""
    parsed: dict[str, str | None] = {}
    i = 0
    while i < len(argv):
        assert argv[i].startswith("--"), argv[i]
        name = argv[i][2:]
        if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            parsed[name] = argv[i + 1]
            i += 2
        else:
            parsed[name] = None
            i += 1
    return parsed


def test_qwen3_8b_defaults() -> None:
    cmd = build_command(get_profile("qwen3-8b"), host="127.0.0.1", port=8100)
    args = _args(cmd.args)
    assert args["model"] == "Qwen/Qwen3-8B"
    assert args["served-model-name"] == "qwen3-8b" == cmd.served_model_name
    assert args["dtype"] == "bfloat16"
    assert args["max-model-len"] == "16384"
    assert float(args["gpu-memory-utilization"] or 0) == pytest.approx(0.9)
    assert "enable-prefix-caching" in args
    assert args["enable-prefix-caching"] is None
    assert args["reasoning-parser"] == "qwen3"
    assert (args["host"], args["port"]) == ("127.0.0.1", "8100")
    assert "otlp-traces-endpoint" not in args
    assert "quantization" not in args
    assert "enforce-eager" not in args
    assert "api-key" not in args
    assert cmd.env["HF_HUB_OFFLINE"] == "1"


def test_qwen3_8b_awq_uses_awq_quantisation() -> None:
    args = _args(build_command(get_profile("qwen3-8b-awq"), host="127.0.0.1", port=1).args)
    assert args["quantization"] == "awq"
    assert args["dtype"] == "float16"
    assert args["served-model-name"] == "qwen3-8b-awq"
    assert args["model"] == "Qwen/Qwen3-8B-AWQ"


def test_cpu_demo_needs_a_model_path_then_runs_eager_with_small_context() -> None:
    profile = get_profile("cpu-demo")
    with pytest.raises(ProfileError, match="has no model"):
        build_command(profile, host="127.0.0.1", port=1)
    cmd = build_command(profile, {"model": "/data/smollm2"}, host="127.0.0.1", port=1)
    args = _args(cmd.args)
    assert args["model"] == "/data/smollm2" == cmd.model
    assert args["served-model-name"] == "smollm2-135m-instruct"
    assert args["max-model-len"] == "2048"
    assert "enforce-eager" in args
    assert dict(cmd.env) == {"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"}


def test_overrides_replace_remove_add_and_negate() -> None:
    cmd = build_command(
        get_profile("qwen3-8b"),
        {
            "--max_model_len": 32768,  # every spelling of a name is accepted
            "reasoning-parser": None,  # removed
            "enable_prefix_caching": False,  # --no- form
            "served-model-name": "qwen3",
            "model": "/models/qwen3-8b",
            "tensor-parallel-size": 2,
            "enforce-eager": True,
        },
        host="127.0.0.1",
        port=9,
        otlp_traces_endpoint="http://127.0.0.1:4317",
    )
    args = _args(cmd.args)
    assert args["max-model-len"] == "32768"
    assert "reasoning-parser" not in args
    assert "enable-prefix-caching" not in args
    assert "no-enable-prefix-caching" in args
    assert args["served-model-name"] == "qwen3" == cmd.served_model_name
    assert args["model"] == "/models/qwen3-8b"
    assert args["tensor-parallel-size"] == "2"
    assert "enforce-eager" in args
    assert args["otlp-traces-endpoint"] == "http://127.0.0.1:4317"
    # host and port come last, so nothing before them can shadow the supervisor's values.
    assert cmd.args[-4:] == ("--host", "127.0.0.1", "--port", "9")


def test_validation_reports_every_problem_at_once() -> None:
    with pytest.raises(ProfileError) as info:
        build_command(
            get_profile("qwen3-8b"),
            {
                "max-model-len": 40000,
                "gpu-memory-utilization": 1.5,
                "host": "0.0.0.0",
                "api_key": "x",
                "enable-log-requests": True,
                "bad name!": 1,
                "served-model-name": None,
            },
            host="127.0.0.1",
            port=1,
        )
    problems = info.value.problems
    assert len(problems) == 7, problems
    text = "\n".join(problems)
    assert "max-model-len must be between 1 and 32768 for profile qwen3-8b, got 40000" in text
    assert "gpu-memory-utilization must be in (0, 1], got 1.5" in text
    assert "host is set by the supervisor" in text
    assert "api-key is set by the supervisor" in text
    assert "enable-log-requests would log prompt or output text" in text
    assert "invalid vLLM argument name 'bad name!'" in text
    assert "served-model-name must be set" in text


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("lots", "max-model-len must be an integer"),
        (1024.5, "max-model-len must be an integer"),
        (0, "between 1 and 8192"),
        (8193, "between 1 and 8192"),
    ],
)
def test_max_model_len_validation_on_cpu_demo(value: str | float, message: str) -> None:
    with pytest.raises(ProfileError, match=message):
        build_command(
            get_profile("cpu-demo"), {"model": "/m", "max-model-len": value}, host="127.0.0.1", port=1
        )


def test_max_model_len_accepts_numeric_string() -> None:
    cmd = build_command(get_profile("cpu-demo"), {"model": "/m", "max-model-len": "4096"}, host="h", port=1)
    assert _args(cmd.args)["max-model-len"] == "4096"


def test_newline_in_a_value_is_refused() -> None:
    with pytest.raises(ProfileError, match="newline"):
        build_command(get_profile("cpu-demo"), {"model": "/m\n--api-key x"}, host="h", port=1)


def test_unknown_profile_lists_known_ones() -> None:
    with pytest.raises(ProfileError, match="known: qwen3-8b, qwen3-8b-awq, cpu-demo"):
        get_profile("llama-70b")


def test_every_profile_documents_memory_and_bounds() -> None:
    assert set(PROFILES) == {"qwen3-8b", "qwen3-8b-awq", "cpu-demo"}
    for profile in PROFILES.values():
        assert isinstance(profile, EngineProfile)
        assert "GiB" in profile.memory
        assert profile.min_memory_gib > 0
        default_len = profile.args["max-model-len"]
        assert isinstance(default_len, int)
        assert default_len <= profile.max_model_len_limit
        # Request logging would put prompts into the gateway's log.
        assert not {"enable-log-requests", "enable-log-outputs"} & set(profile.args)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("--max_model_len", "max-model-len"), ("Max-Model-Len", "max-model-len"), (" dtype ", "dtype")],
)
def test_normalise_arg_name(raw: str, expected: str) -> None:
    assert normalise_arg_name(raw) == expected
