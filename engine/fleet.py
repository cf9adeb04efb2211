"""Every engine of a profile, each under its own supervisor, started, awaited and stopped together.

Each engine keeps what one supervisor guarantees (loopback, a free port and a random key of its own,
restart with backoff, its own log file). The fleet adds one progress line naming what is still
loading, so that two engines do not interleave two progress lines.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Sequence

from engine.profiles import (
    EngineProfile,
    Overrides,
    ProfileError,
    Role,
    get_profile,
    merge_args,
    split_overrides_lenient,
)
from engine.supervisor import ENGINE_LOGGER, EngineSupervisor
from engine.supervisor_config import SupervisorConfig, SupervisorConfigError

# vLLM's own default when an engine does not say.
_VLLM_GPU_MEMORY_DEFAULT = 0.9


def profile_configs(
    profile: str | EngineProfile, overrides: Overrides | None = None, template: SupervisorConfig | None = None
) -> tuple[SupervisorConfig, ...]:
    """One supervisor configuration per engine of ``profile``, the rest taken from ``template``.

    ``ROLE:NAME`` overrides address one engine, plain ``NAME`` the chat engine. Raises
    ``SupervisorConfigError`` listing every problem of every engine at once.
    """
    base = template or SupervisorConfig()
    try:
        resolved = get_profile(profile) if isinstance(profile, str) else profile
    except ProfileError as exc:
        raise SupervisorConfigError(list(exc.problems)) from None
    by_role, problems = split_overrides_lenient(resolved, overrides)
    configs: list[SupervisorConfig] = []
    for role, engine_overrides in by_role.items():
        try:
            configs.append(
                dataclasses.replace(
                    base, profile=resolved, role=role, overrides=engine_overrides, log_progress=False
                )
            )
        except SupervisorConfigError as exc:
            # The template was validated when it was built: what is left is this engine's own.
            problems += [f"{role} engine: {p}" for p in exc.problems]
    if not problems and resolved.device == "gpu":
        problems += _gpu_share_problems(resolved, configs)
    if problems:
        raise SupervisorConfigError(problems)
    return tuple(configs)


def _gpu_share_problems(profile: EngineProfile, configs: Sequence[SupervisorConfig]) -> list[str]:
    """The engines share one GPU: their memory fractions must leave each other room."""
    shares: dict[Role, float] = {}
    for cfg in configs:
        spec = cfg.engine()
        value = merge_args(spec, cfg.overrides).get("gpu-memory-utilization")
        shares[spec.role] = _VLLM_GPU_MEMORY_DEFAULT if isinstance(value, bool | None) else float(value)
    if len(shares) < 2 or sum(shares.values()) <= 1.0:
        return []
    detail = ", ".join(f"{role} {share:g}" for role, share in shares.items())
    return [
        f"the engines of profile {profile.name} share one GPU but their gpu-memory-utilization adds up "
        f"to {sum(shares.values()):g} ({detail}); lower one with --engine-arg ROLE:gpu-memory-utilization=VALUE"
    ]


class EngineFleet:
    """The supervisors of one profile's engines. ``primary`` is the chat engine (else the first)."""

    def __init__(self, configs: Sequence[SupervisorConfig]) -> None:
        if not configs:
            raise ValueError("an engine fleet needs at least one engine")
        self.supervisors = tuple(EngineSupervisor(cfg) for cfg in configs)
        self._progress_s = min(cfg.progress_interval_s for cfg in configs)
        self._log = logging.getLogger(ENGINE_LOGGER)

    @property
    def primary(self) -> EngineSupervisor:
        return self.get("chat") or self.supervisors[0]

    def get(self, role: Role) -> EngineSupervisor | None:
        return next((sup for sup in self.supervisors if sup.role == role), None)

    @property
    def api_keys(self) -> tuple[str, ...]:
        return tuple(sup.api_key for sup in self.supervisors)

    async def start(self) -> None:
        """Prepare and launch every engine, one after the other (preparation is CPU-bound)."""
        for sup in self.supervisors:
            await sup.start()

    async def wait_ready(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 (public API)
        """Wait until every engine answers ``/health``; the first ``EngineStartError`` is raised."""
        waits = {asyncio.ensure_future(sup.wait_ready(timeout)): sup for sup in self.supervisors}
        pending = set(waits)
        started = time.monotonic()
        try:
            while pending:
                done, pending = await asyncio.wait(
                    pending, timeout=self._progress_s, return_when=asyncio.FIRST_COMPLETED
                )
                for task in done:
                    task.result()
                if pending and not done:
                    loading = ", ".join(f"{waits[t].served_model_name} ({waits[t].role})" for t in pending)
                    self._log.info("loading %s… %.0f s", loading, time.monotonic() - started)
        finally:
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)

    async def stop(self) -> None:
        """Stop every engine at once (each has its own grace period); the first failure is raised."""
        results = await asyncio.gather(*(sup.stop() for sup in self.supervisors), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result


__all__ = ["EngineFleet", "profile_configs"]
