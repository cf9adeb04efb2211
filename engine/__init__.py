"""The colocated vLLM engine: profiles, demo model preparation and the process supervisor.

Never imports ``gateway``: the engine side stands alone.
"""

from engine.demo_model import DemoModelError, default_data_dir, demo_model_dir, prepare_demo_model
from engine.profiles import (
    PROFILES,
    ArgValue,
    EngineCommand,
    EngineProfile,
    Overrides,
    ProfileError,
    build_command,
    get_profile,
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
    "EngineProfile",
    "EngineStartError",
    "EngineStatus",
    "EngineSupervisor",
    "Overrides",
    "ProfileError",
    "SupervisorConfig",
    "SupervisorConfigError",
    "build_command",
    "default_data_dir",
    "demo_model_dir",
    "get_profile",
    "prepare_demo_model",
]
