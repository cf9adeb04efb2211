"""Configuration of the engine supervisor, and the state snapshot it reports."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from engine.profiles import ArgValue, EngineProfile, EngineSpec, ProfileError, Role, get_profile, merge_args


class SupervisorConfigError(ValueError):
    """The supervisor configuration is invalid; ``problems`` lists every problem found."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid engine supervisor configuration:\n  - " + "\n  - ".join(problems))
        self.problems = tuple(problems)


@dataclass(frozen=True, slots=True)
class SupervisorConfig:
    """How to run the engine. Validated on construction; every problem is reported at once."""

    profile: str | EngineProfile = "cpu-demo"
    """Profile name (``qwen3-8b``, ``qwen3-8b-awq``, ``cpu-demo``) or a custom profile."""
    role: Role | None = None
    """Which engine of the profile to run; ``None``: its chat engine (else its first)."""
    overrides: Mapping[str, ArgValue] = field(default_factory=dict)
    """vLLM arguments of that engine by name; ``None`` removes one, ``True`` is a bare flag."""
    data_dir: Path | None = None
    """Where the demo model is prepared; ``None``: ``$GATEWAY_DATA_DIR`` or ``~/.cache/menshen``."""
    host: str = "127.0.0.1"
    """Loopback address the engine binds; anything else is refused (the gateway is the only door)."""
    port: int | None = None
    """Engine port; ``None`` picks a free one once and keeps it across restarts."""
    startup_timeout_s: float = 600.0
    """A start not healthy by then is killed and retried with backoff."""
    backoff_min_s: float = 1.0
    """First restart delay; it doubles per consecutive failure."""
    backoff_max_s: float = 60.0
    """Cap of the restart delay."""
    stable_after_s: float = 60.0
    """Healthy this long, the next crash restarts after ``backoff_min_s`` again."""
    health_interval_s: float = 5.0
    """Health probe period once ready."""
    health_failures: int = 3
    """Consecutive failed probes after which a running engine counts as hung and is restarted."""
    progress_interval_s: float = 5.0
    """How often start-up progress is logged while waiting for ``/health``."""
    log_progress: bool = True
    """Log that progress; off when something that waits for several engines logs it for all."""
    max_failed_starts: int | None = None
    """Give up (``wait_ready`` raises ``EngineStartError``) after this many starts in a row that end
    before the engine was ever ready; ``None``: keep retrying. Once it has been ready, always retry."""
    stop_grace_s: float = 20.0
    """SIGTERM, then SIGKILL after this long."""
    extra_env: Mapping[str, str] = field(default_factory=dict)
    """Environment added for the engine (after the profile's)."""
    otlp_traces_endpoint: str | None = None
    """Passed to vLLM as ``--otlp-traces-endpoint`` when set."""
    command_prefix: tuple[str, ...] = ()
    """Program before the vLLM arguments; empty: ``sys.executable -m vllm.entrypoints.openai.api_server``."""

    def __post_init__(self) -> None:
        problems: list[str] = []
        profile: EngineProfile | None = None
        try:
            profile = get_profile(self.profile) if isinstance(self.profile, str) else self.profile
        except ProfileError as exc:
            problems += exc.problems
        if profile is not None:
            try:
                merge_args(profile.engine(self.role), self.overrides)
            except ProfileError as exc:
                problems += exc.problems
        try:
            if not ipaddress.ip_address(self.host).is_loopback:
                problems.append(f"host must be a loopback address, got {self.host!r}")
        except ValueError:
            problems.append(f"host must be a loopback IP address (e.g. 127.0.0.1), got {self.host!r}")
        if self.port is not None and not 1 <= self.port <= 65535:
            problems.append(f"port must be in 1..65535, got {self.port}")
        for name in ("startup_timeout_s", "backoff_min_s", "health_interval_s", "progress_interval_s"):
            if getattr(self, name) <= 0:
                problems.append(f"{name} must be > 0")
        if self.backoff_max_s < self.backoff_min_s:
            problems.append("backoff_max_s must be >= backoff_min_s")
        if self.stop_grace_s < 0 or self.stable_after_s < 0:
            problems.append("stop_grace_s and stable_after_s must be >= 0")
        if self.health_failures < 1:
            problems.append("health_failures must be >= 1")
        if self.max_failed_starts is not None and self.max_failed_starts < 1:
            problems.append("max_failed_starts must be >= 1")
        if problems:
            raise SupervisorConfigError(problems)

    def resolved_profile(self) -> EngineProfile:
        return get_profile(self.profile) if isinstance(self.profile, str) else self.profile

    def engine(self) -> EngineSpec:
        """The engine of the profile this configuration runs."""
        return self.resolved_profile().engine(self.role)


@dataclass(frozen=True, slots=True)
class EngineStatus:
    """A snapshot of the supervisor's state, for readiness checks and metrics."""

    up: bool
    pid: int | None
    restarts: int
    last_exit: int | None
    reason: str | None
    base_url: str
