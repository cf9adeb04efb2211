"""Engine profiles: typed vLLM configurations that become a command line and an environment.

A profile holds vLLM argument defaults by their command-line name (``max-model-len``). Overrides use
the same names (``max_model_len`` and ``--max-model-len`` are accepted too): a value replaces the
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
class EngineProfile:
    """A named vLLM configuration.

    ``args`` are vLLM arguments by command-line name. ``model`` is a local path or a model name
    whose weights are already in the local Hugging Face cache; ``None`` means the demo model that
    ``engine.demo_model`` prepares. ``memory`` says what the profile needs to run.
    """

    name: str
    description: str
    device: Device
    model: str | None
    served_model_name: str
    max_model_len_limit: int
    memory: str
    min_memory_gib: float
    args: Mapping[str, ArgValue] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EngineCommand:
    """vLLM arguments (without the interpreter prefix) and the extra environment they need."""

    args: tuple[str, ...]
    env: Mapping[str, str]
    model: str
    served_model_name: str


# What both Qwen3-8B GPU profiles share; they differ in weights and dtype.
_QWEN3_GPU_ARGS: Mapping[str, ArgValue] = MappingProxyType(
    {
        "max-model-len": 16384,
        "gpu-memory-utilization": 0.90,
        "enable-prefix-caching": True,
        "reasoning-parser": "qwen3",
        "disable-uvicorn-access-log": True,
    }
)

# Per-token KV cache of Qwen3-8B: 36 layers x 8 KV heads x 128 dims x 2 (K, V) x 2 bytes = 144 KiB.
_QWEN3_8B = EngineProfile(
    name="qwen3-8b",
    description="Qwen3-8B in bf16 on one GPU, prefix caching, Qwen3 reasoning parser.",
    device="gpu",
    model="Qwen/Qwen3-8B",
    served_model_name="qwen3-8b",
    max_model_len_limit=32768,
    memory=(
        "One GPU with at least 24 GiB: weights take 16.4 GiB in bf16 and the KV cache 144 KiB per "
        "token (2.25 GiB for one 16k-token sequence, 4.5 GiB at 32k). 40-80 GiB cards (A100, H100, "
        "L40S) leave room for dozens of concurrent sequences. Host RAM: about 20 GiB while loading."
    ),
    min_memory_gib=24.0,
    args=MappingProxyType({"dtype": "bfloat16", **_QWEN3_GPU_ARGS}),
    env=MappingProxyType({"HF_HUB_OFFLINE": "1"}),
)

_QWEN3_8B_AWQ = EngineProfile(
    name="qwen3-8b-awq",
    description="Qwen3-8B AWQ 4-bit for smaller cards (fp16 activations).",
    device="gpu",
    model="Qwen/Qwen3-8B-AWQ",
    served_model_name="qwen3-8b-awq",
    max_model_len_limit=32768,
    memory=(
        "One GPU with at least 12 GiB: weights take about 5.7 GiB (AWQ 4-bit) and the KV cache "
        "144 KiB per token in fp16 (2.25 GiB for one 16k-token sequence). 16-24 GiB cards (T4, L4, "
        "A10) serve several concurrent sequences. On Ampere or newer, override "
        "quantization=awq_marlin for faster kernels."
    ),
    min_memory_gib=12.0,
    args=MappingProxyType({"quantization": "awq", "dtype": "float16", **_QWEN3_GPU_ARGS}),
    env=MappingProxyType({"HF_HUB_OFFLINE": "1"}),
)

_CPU_DEMO = EngineProfile(
    name="cpu-demo",
    description="SmolLM2-135M-Instruct on CPU for demos and CI (no GPU needed).",
    device="cpu",
    model=None,
    served_model_name="smollm2-135m-instruct",
    max_model_len_limit=8192,
    memory=(
        "About 3 GiB of RAM: 270 MB of bf16 weights, a 1 GiB KV cache (VLLM_CPU_KVCACHE_SPACE=1) "
        "and the vLLM processes. 300 MB of disk for the converted model. Any x86-64 CPU with AVX2."
    ),
    min_memory_gib=3.0,
    args=MappingProxyType(
        {
            "max-model-len": 2048,
            "enforce-eager": True,
            "disable-uvicorn-access-log": True,
        }
    ),
    env=MappingProxyType({"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"}),
)

PROFILES: Mapping[str, EngineProfile] = MappingProxyType(
    {p.name: p for p in (_QWEN3_8B, _QWEN3_8B_AWQ, _CPU_DEMO)}
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


def _check_value(name: str, value: ArgValue, profile: EngineProfile, problems: list[str]) -> None:
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
        elif not 1 <= length <= profile.max_model_len_limit:
            problems.append(
                f"max-model-len must be between 1 and {profile.max_model_len_limit} "
                f"for profile {profile.name}, got {length}"
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


def merge_args(profile: EngineProfile, overrides: Overrides | None = None) -> dict[str, ArgValue]:
    """The profile's arguments with ``overrides`` applied; every problem is reported at once."""
    merged: dict[str, ArgValue] = {"model": profile.model, "served-model-name": profile.served_model_name}
    merged.update(profile.args)
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
        _check_value(name, value, profile, problems)
    if merged.get("served-model-name") is None:
        problems.append("served-model-name must be set")
    if problems:
        raise ProfileError(problems)
    return merged


def build_command(
    profile: EngineProfile,
    overrides: Overrides | None = None,
    *,
    host: str,
    port: int,
    otlp_traces_endpoint: str | None = None,
) -> EngineCommand:
    """Turn a profile plus overrides into vLLM arguments and environment.

    The API key is deliberately absent: the supervisor passes it as ``VLLM_API_KEY`` in the
    environment, which other local users cannot read, unlike a process's command line.
    Raises ``ProfileError`` listing every problem, including a missing model (``cpu-demo`` needs
    the path from ``prepare_demo_model`` as the ``model`` override).
    """
    merged = merge_args(profile, overrides)
    if not merged.get("model"):
        raise ProfileError(
            [f"profile {profile.name} has no model: pass the model path as the 'model' override"]
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
        env=MappingProxyType(dict(profile.env)),
        model=str(merged["model"]),
        served_model_name=str(merged["served-model-name"]),
    )
