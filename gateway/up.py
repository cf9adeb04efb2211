"""``gateway up``: the colocated engines and the gateway as one service.

Every engine of the profile (chat, embeddings, ...) runs under its own supervisor, on loopback behind a
random internal key of its own; the gateway is the only door. The gateway serves at once (``/readyz`` is
503 until the chat engine is healthy), and the banner with the URL, every model, a ready bearer token and
curl examples is printed when all the engines are up.

Each engine's own output goes to ``DATA_DIR/logs/engine-PROFILE-ROLE.log``; the terminal shows a progress
line naming what is still loading, and the end of the failing engine's file if one cannot start
(``gateway up`` then exits 1). SIGINT or SIGTERM, at any point, stops the gateway and every engine and
exits 0.

``MENSHEN_ENGINE_COMMAND`` (shell words) replaces ``python -m vllm.entrypoints.openai.api_server`` as the
program the profile's vLLM arguments are given to: for tests with a stand-in engine, or a custom launcher.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import shutil
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

from engine.fleet import EngineFleet, profile_configs
from engine.supervisor import EngineStartError, EngineSupervisor, SupervisorConfig, SupervisorConfigError
from gateway.app import AppParts
from gateway.serve import StopSignals, configure_logging_for, prepare
from gateway.settings import Settings

log = logging.getLogger("menshen.up")
DEMO_CLIENT = "demo-app"
ENGINE_COMMAND_ENV = "MENSHEN_ENGINE_COMMAND"


def default_profile() -> str:
    """``qwen3-8b`` on a node with an NVIDIA GPU, else the CPU demo."""
    return "qwen3-8b" if shutil.which("nvidia-smi") else "cpu-demo"


def parse_engine_args(pairs: list[str]) -> dict[str, str | bool | None]:
    """``[ROLE:]NAME=VALUE`` pairs as overrides; the ``ROLE:`` prefix is kept for ``profile_configs``."""
    out: dict[str, str | bool | None] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        role, colon, bare = name.strip().rpartition(":")
        name = f"{role}{colon}{bare.strip().removeprefix('--')}"
        if not sep or value.lower() == "true":
            out[name] = True
        elif value.lower() == "false":
            out[name] = False
        else:
            out[name] = value if value != "" else None
    return out


def demo_token(settings: Settings) -> str | None:
    """A token for the policy's demo client from the built-in issuer, when it is enabled."""
    cfg = settings.auth
    if "builtin" not in cfg.modes:
        return None
    from gateway.auth import KeyFile, mint_token
    from gateway.auth.keystore import signing_key

    keys = KeyFile(cfg.key_path).ensure()
    return mint_token(
        signing_key(keys),
        issuer=cfg.issuer_url,
        audience=cfg.builtin_audience,
        client_id=DEMO_CLIENT,
        scopes=[],
        ttl_s=min(cfg.max_token_ttl_s, 12 * 3600),
    )


def banner(settings: Settings, engines: Sequence[EngineSupervisor], token: str | None) -> str:
    url = settings.server.url
    auth = f' \\\n  -H "Authorization: Bearer {token}"' if token else ""
    lines = [
        "",
        f"Menshen is ready at {url}/v1",
        "  models: " + ", ".join(f"{sup.served_model_name!r} ({sup.role})" for sup in engines),
        f"  demo bearer token (client {DEMO_CLIENT}, 12 h):\n  {token}" if token else "  auth: none",
        "  try:",
    ]
    examples = {
        "chat": (
            "chat/completions",
            '"messages": [{"role": "user", "content": "What is the capital of France?"}], "temperature": 0',
        ),
        "embeddings": ("embeddings", '"input": ["annual leave days", "vacation days"]'),
    }
    for sup in engines:
        if example := examples.get(sup.role):
            path, body = example
            lines.append(
                f"  curl -s {url}/v1/{path}{auth} \\\n"
                f"  -H 'Content-Type: application/json' \\\n"
                f'  -d \'{{"model": "{sup.served_model_name}", {body}}}\''
            )
    lines.append("")
    return "\n".join(lines)


async def run_up(settings: Settings, *, profile: str | None, engine_args: list[str]) -> int:
    """``gateway up``: 0 after SIGINT/SIGTERM, 1 when an engine cannot start, 2 on invalid configuration."""
    signals = StopSignals().install()
    stop = asyncio.Event()
    signals.wake(stop)
    try:
        configs = profile_configs(
            profile or default_profile(),
            parse_engine_args(engine_args),
            SupervisorConfig(
                data_dir=settings.data_dir,
                otlp_traces_endpoint=os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
                command_prefix=tuple(shlex.split(os.environ.get(ENGINE_COMMAND_ENV, ""))),
                # An engine that never came up is a set-up problem (missing vLLM, bad arguments, no
                # memory): say so and stop, rather than retry forever. Once it has served, crashes are
                # restarted.
                max_failed_starts=1,
            ),
        )
    except SupervisorConfigError as exc:
        print(f"gateway up: invalid engine configuration: {exc}", file=sys.stderr)
        return 2
    fleet = EngineFleet(configs)
    configure_logging_for(settings, fleet.api_keys)
    try:
        try:
            if not await _until_stopped(fleet.start(), stop):
                return 0
        except EngineStartError as exc:  # a packaged model could not be prepared
            log.error("%s", exc)
            return 1
        if settings.server.workers > 1:
            return await _serve_workers(settings, fleet, signals, stop)
        return await _serve(settings, fleet, signals)
    finally:
        await fleet.stop()


async def _until_stopped(step: Coroutine[Any, Any, None], stop: asyncio.Event) -> bool:
    """Run ``step`` unless a stop signal comes first (then cancel it); True if it completed."""
    task = asyncio.ensure_future(step)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if not task.done():
        task.cancel()
        await asyncio.wait({task})
        return False
    task.result()
    return True


async def _serve(settings: Settings, fleet: EngineFleet, signals: StopSignals) -> int:
    chat = fleet.primary
    prepared = prepare(
        settings.replace(upstream=chat.base_url),
        # `supervisor`/`engine_api_key` keep the single-upstream app working until it builds its
        # upstreams from `supervisors`.
        AppParts(supervisor=chat, engine_api_key=chat.api_key, supervisors=fleet.supervisors),
    )
    if prepared is None:
        return 2
    server, telemetry = prepared
    signals.server = server
    failed = False

    async def announce() -> None:
        nonlocal failed
        try:
            await fleet.wait_ready()
        except EngineStartError:  # the supervisor has logged why, with the end of the engine log
            failed = True
            server.should_exit = True
            return
        print(banner(settings, fleet.supervisors, demo_token(settings)), flush=True)

    announcer = asyncio.create_task(announce())
    try:
        if not signals.received:
            await server.serve()
    finally:
        announcer.cancel()
        await asyncio.wait({announcer})
        telemetry.shutdown()
    return 1 if failed else 0


async def _serve_workers(
    settings: Settings, fleet: EngineFleet, signals: StopSignals, stop: asyncio.Event
) -> int:
    """``--workers N``: the engines' supervisors stay here; N gateway workers serve the port."""
    from gateway.workers import serve_workers  # only this mode needs it

    chat = fleet.primary
    failed = False

    async def announce() -> None:
        nonlocal failed
        try:
            await fleet.wait_ready()
        except EngineStartError:  # the supervisor has logged why
            failed = True
            stop.set()
            return
        print(banner(settings, fleet.supervisors, demo_token(settings)), flush=True)

    announcer = asyncio.create_task(announce())
    try:
        code = await serve_workers(
            settings.replace(upstream=chat.base_url), signals, stop, engine_api_key=chat.api_key
        )
    finally:
        announcer.cancel()
        await asyncio.wait({announcer})
    return 1 if failed else code


__all__ = ["banner", "default_profile", "demo_token", "parse_engine_args", "run_up"]
