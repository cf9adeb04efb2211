"""The colocated vLLM engines: profiles, demo model preparation and the process supervisors.

Never imports ``gateway``. Names are loaded on first use, so ``import engine`` stays cheap and
``python -m engine.demo_model`` runs without its module being imported twice.
"""

from __future__ import annotations

import importlib
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.demo_model import DemoModelError, demo_model_dir, prepare_demo_model
    from engine.embedding_model import embedding_model_dir, prepare_embedding_model
    from engine.fleet import EngineFleet, profile_configs
    from engine.paths import data_dir
    from engine.profiles import (
        PROFILES,
        ArgValue,
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
    from engine.supervisor import (
        ENGINE_LOGGER,
        EngineStartError,
        EngineStatus,
        EngineSupervisor,
        SupervisorConfig,
        SupervisorConfigError,
    )

__all__ = [
    "ENGINE_LOGGER",
    "PROFILES",
    "ArgValue",
    "DemoModelError",
    "EngineCommand",
    "EngineFleet",
    "EngineProfile",
    "EngineSpec",
    "EngineStartError",
    "EngineStatus",
    "EngineSupervisor",
    "Overrides",
    "ProfileError",
    "Role",
    "SupervisorConfig",
    "SupervisorConfigError",
    "build_command",
    "data_dir",
    "demo_model_dir",
    "embedding_model_dir",
    "get_profile",
    "prepare_demo_model",
    "prepare_embedding_model",
    "profile_configs",
    "split_overrides",
]

# Public name -> the submodule that defines it.
_HOME = MappingProxyType(
    {
        "DemoModelError": "demo_model",
        "data_dir": "paths",
        "demo_model_dir": "demo_model",
        "prepare_demo_model": "demo_model",
        "embedding_model_dir": "embedding_model",
        "prepare_embedding_model": "embedding_model",
        "EngineFleet": "fleet",
        "profile_configs": "fleet",
        "EngineSpec": "profiles",
        "Role": "profiles",
        "split_overrides": "profiles",
        "PROFILES": "profiles",
        "ArgValue": "profiles",
        "EngineCommand": "profiles",
        "EngineProfile": "profiles",
        "Overrides": "profiles",
        "ProfileError": "profiles",
        "build_command": "profiles",
        "get_profile": "profiles",
        "ENGINE_LOGGER": "supervisor",
        "EngineStartError": "supervisor",
        "EngineStatus": "supervisor",
        "EngineSupervisor": "supervisor",
        "SupervisorConfig": "supervisor",
        "SupervisorConfigError": "supervisor",
    }
)


def __getattr__(name: str) -> object:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    return getattr(importlib.import_module(f"engine.{module}"), name)


def __dir__() -> list[str]:
    return sorted(__all__)
