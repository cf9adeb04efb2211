"""Profiles to vLLM argv and environment: defaults per profile, overrides, validation."""

from __future__ import annotations

import pytest

from engine import (
    PROFILES,
    EngineCommand,
    EngineProfile,
    EngineSpec,
    Overrides,
    ProfileError,
    Role,
    build_command,
    get_profile,
    split_overrides,
)
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


def _command(profile: str, role: Role = "chat", overrides: Overrides | None = None) -> EngineCommand:
    return build_command(get_profile(profile).engine(role), overrides, host="127.0.0.1", port=8100)


def test_qwen3_8b_runs_chat_and_embeddings_sharing_the_gpu() -> None:
    profile = get_profile("qwen3-8b")
    assert profile.roles == ("chat", "embeddings")
    cmd = _command("qwen3-8b")
    args = _args(cmd.args)
    assert args["model"] == "Qwen/Qwen3-8B"
    assert args["served-model-name"] == "qwen3-8b" == cmd.served_model_name
    assert args["dtype"] == "bfloat16"
    assert args["max-model-len"] == "16384"
    assert float(args["gpu-memory-utilization"] or 0) == pytest.approx(0.8)
    assert "enable-prefix-caching" in args
    assert args["enable-prefix-caching"] is None
    assert args["reasoning-parser"] == "qwen3"
    assert "enable-auto-tool-choice" in args
    assert args["tool-call-parser"] == "hermes"
    assert (args["host"], args["port"]) == ("127.0.0.1", "8100")
    assert "otlp-traces-endpoint" not in args
    assert "quantization" not in args
    assert "enforce-eager" not in args
    assert "api-key" not in args
    assert cmd.env["HF_HUB_OFFLINE"] == "1"

    emb = _command("qwen3-8b", "embeddings")
    eargs = _args(emb.args)
    assert eargs["model"] == "Qwen/Qwen3-Embedding-0.6B"
    assert eargs["served-model-name"] == "qwen3-embedding-0.6b" == emb.served_model_name
    assert eargs["runner"] == "pooling"
    assert float(eargs["gpu-memory-utilization"] or 0) == pytest.approx(0.1)
    assert "reasoning-parser" not in eargs
    assert emb.env["HF_HUB_OFFLINE"] == "1"


def test_qwen3_8b_awq_uses_awq_quantisation_and_fp16_embeddings() -> None:
    args = _args(_command("qwen3-8b-awq").args)
    assert args["quantization"] == "awq"
    assert args["dtype"] == "float16"
    assert args["served-model-name"] == "qwen3-8b-awq"
    assert args["model"] == "Qwen/Qwen3-8B-AWQ"
    assert args["tool-call-parser"] == "hermes"
    eargs = _args(_command("qwen3-8b-awq", "embeddings").args)
    assert (eargs["runner"], eargs["dtype"]) == ("pooling", "float16")
    shares = [
        float(_args(_command("qwen3-8b-awq", role).args)["gpu-memory-utilization"] or 0)
        for role in ("chat", "embeddings")
    ]
    assert sum(shares) <= 0.9


def test_cpu_demo_needs_a_model_path_then_runs_eager_with_small_context_and_tool_parser() -> None:
    chat = get_profile("cpu-demo").engine("chat")
    assert chat.packaged == "smollm2-135m-instruct"
    with pytest.raises(ProfileError, match="has no model"):
        build_command(chat, host="127.0.0.1", port=1)
    cmd = build_command(chat, {"model": "/data/smollm2"}, host="127.0.0.1", port=1)
    args = _args(cmd.args)
    assert args["model"] == "/data/smollm2" == cmd.model
    assert args["served-model-name"] == "smollm2-135m-instruct"
    assert args["max-model-len"] == "2048"
    assert "enforce-eager" in args
    # vLLM refuses a named tool_choice without a parser.
    assert "enable-auto-tool-choice" in args
    assert args["tool-call-parser"] == "hermes"
    assert dict(cmd.env) == {"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"}


def test_cpu_demo_embeddings_engine_pools_in_float32() -> None:
    spec = get_profile("cpu-demo").engine("embeddings")
    assert spec.packaged == "all-minilm-l6-v2"
    cmd = build_command(spec, {"model": "/data/minilm"}, host="127.0.0.1", port=2)
    args = _args(cmd.args)
    assert args["served-model-name"] == "all-minilm-l6-v2" == cmd.served_model_name
    assert (args["runner"], args["dtype"]) == ("pooling", "float32")
    assert "enforce-eager" in args
    # vLLM takes the 256-token limit from the sentence-transformers config.
    assert "max-model-len" not in args
    assert "tool-call-parser" not in args
    assert dict(cmd.env) == {"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"}
    with pytest.raises(ProfileError, match="between 1 and 256 for all-minilm-l6-v2"):
        build_command(spec, {"model": "/m", "max-model-len": 512}, host="h", port=1)


def test_a_profile_names_its_engines_when_a_role_is_missing() -> None:
    profile = get_profile("cpu-demo")
    assert profile.engine().role == "chat"
    with pytest.raises(
        ProfileError, match="profile cpu-demo has no 'guard' engine; its engines: chat, embeddings"
    ):
        profile.engine("guard")


def test_split_overrides_addresses_one_engine_and_plain_names_the_chat_one() -> None:
    split = split_overrides(
        get_profile("cpu-demo"),
        {
            "max-model-len": 4096,
            "embeddings:model": "/m/minilm",
            "chat:enforce-eager": False,
            " Embeddings :dtype": "bfloat16",
        },
    )
    assert split == {
        "chat": {"max-model-len": 4096, "enforce-eager": False},
        "embeddings": {"model": "/m/minilm", "dtype": "bfloat16"},
    }


def test_split_overrides_reports_every_unknown_role() -> None:
    with pytest.raises(ProfileError) as info:
        split_overrides(get_profile("qwen3-8b"), {"guard:model": "x", "chta:dtype": "half", "dtype": "half"})
    assert info.value.problems == (
        "'guard:model': profile qwen3-8b has no 'guard' engine; its engines: chat, embeddings",
        "'chta:dtype': profile qwen3-8b has no 'chta' engine; its engines: chat, embeddings",
    )


def test_overrides_replace_remove_add_and_negate() -> None:
    cmd = build_command(
        get_profile("qwen3-8b").engine(),
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
            get_profile("qwen3-8b").engine(),
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
    assert "max-model-len must be between 1 and 32768 for qwen3-8b, got 40000" in text
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
            get_profile("cpu-demo").engine(),
            {"model": "/m", "max-model-len": value},
            host="127.0.0.1",
            port=1,
        )


def test_max_model_len_accepts_numeric_string() -> None:
    cmd = build_command(
        get_profile("cpu-demo").engine(), {"model": "/m", "max-model-len": "4096"}, host="h", port=1
    )
    assert _args(cmd.args)["max-model-len"] == "4096"


def test_newline_in_a_value_is_refused() -> None:
    with pytest.raises(ProfileError, match="newline"):
        build_command(get_profile("cpu-demo").engine(), {"model": "/m\n--api-key x"}, host="h", port=1)


def test_unknown_profile_lists_known_ones() -> None:
    with pytest.raises(ProfileError, match="known: qwen3-8b, qwen3-8b-guarded, qwen3-8b-awq, cpu-demo"):
        get_profile("llama-70b")


def test_every_profile_documents_memory_and_bounds() -> None:
    assert set(PROFILES) == {"qwen3-8b", "qwen3-8b-guarded", "qwen3-8b-awq", "cpu-demo"}
    for profile in PROFILES.values():
        assert isinstance(profile, EngineProfile)
        assert "GiB" in profile.memory
        assert profile.min_memory_gib > 0
        # One engine per role, a chat one first: plain overrides address it.
        assert profile.roles[0] == "chat"
        assert len(set(profile.roles)) == len(profile.roles)
        for spec in profile.engines:
            assert isinstance(spec, EngineSpec)
            # Weights come from the operator (a path or the offline cache) or from a package.
            assert (spec.model is None) != (spec.packaged is None)
            default_len = spec.args.get("max-model-len", spec.max_model_len_limit)
            assert isinstance(default_len, int)
            assert default_len <= spec.max_model_len_limit
            # Request logging would put prompts into the gateway's log.
            assert not {"enable-log-requests", "enable-log-outputs"} & set(spec.args)
        assert "embeddings" in profile.roles
        assert profile.engine("embeddings").args["runner"] == "pooling"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("--max_model_len", "max-model-len"), ("Max-Model-Len", "max-model-len"), (" dtype ", "dtype")],
)
def test_normalise_arg_name(raw: str, expected: str) -> None:
    assert normalise_arg_name(raw) == expected


def test_the_guarded_profile_runs_qwen3guard_beside_chat_and_embeddings() -> None:
    profile = PROFILES["qwen3-8b-guarded"]
    assert [e.role for e in profile.engines] == ["chat", "embeddings", "guard"]
    guard = _args(_command("qwen3-8b-guarded", "guard").args)
    assert guard["served-model-name"] == "qwen3guard-gen-0.6b"
    shares = [
        float(_args(_command("qwen3-8b-guarded", r).args)["gpu-memory-utilization"] or 0)
        for r in ("chat", "embeddings", "guard")
    ]
    assert sum(shares) <= 0.95  # three engines share one card, with room left for CUDA's own use
