"""``gateway up``: the colocated engine and the gateway as one service.

The supervisor starts vLLM on loopback behind a random internal key; the gateway is the only door. The
gateway serves at once (``/readyz`` is 503 until the engine is healthy), and the banner with the URL, a
ready bearer token and a curl example is printed when the engine is up.

The engine's own output goes to ``DATA_DIR/logs/engine-PROFILE.log``; the terminal shows a progress line
while the model loads, and the end of that file if the engine cannot start (``gateway up`` then exits 1).
SIGINT or SIGTERM, at any point, stops the gateway and the engine and exits 0.

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
from collections.abc import Coroutine
from typing import Any

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
    out: dict[str, str | bool | None] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name = name.strip().removeprefix("--")
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


def banner(settings: Settings, model: str, token: str | None) -> str:
    url = settings.server.url
    auth = f' \\\n  -H "Authorization: Bearer {token}"' if token else ""
    lines = [
        "",
        f"Menshen is ready at {url}/v1 (model {model!r})",
        f"  demo bearer token (client {DEMO_CLIENT}, 12 h):\n  {token}" if token else "  auth: none",
        "  try:",
        f"  curl -s {url}/v1/chat/completions{auth} \\\n"
        f"  -H 'Content-Type: application/json' \\\n"
        f'  -d \'{{"model": "{model}", "messages": [{{"role": "user", "content": "What is the capital of France?"}}], "temperature": 0}}\'',
        "",
    ]
    return "\n".join(lines)


async def run_up(settings: Settings, *, profile: str | None, engine_args: list[str]) -> int:
    """``gateway up``: 0 after SIGINT/SIGTERM, 1 when the engine cannot start, 2 on invalid configuration."""
    signals = StopSignals().install()
    stop = asyncio.Event()
    signals.wake(stop)
    try:
        config = SupervisorConfig(
            profile=profile or default_profile(),
            overrides=parse_engine_args(engine_args),
            data_dir=settings.data_dir,
            otlp_traces_endpoint=os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            command_prefix=tuple(shlex.split(os.environ.get(ENGINE_COMMAND_ENV, ""))),
            # An engine that never came up is a set-up problem (missing vLLM, bad arguments, no memory):
            # say so and stop, rather than retry forever. Once it has served, crashes are restarted.
            max_failed_starts=1,
        )
    except SupervisorConfigError as exc:
        print(f"gateway up: invalid engine configuration: {exc}", file=sys.stderr)
        return 2
    supervisor = EngineSupervisor(config)
    configure_logging_for(settings, [supervisor.api_key])
    try:
        try:
            if not await _until_stopped(supervisor.start(), stop):
                return 0
        except EngineStartError as exc:  # the demo model could not be prepared
            log.error("%s", exc)
            return 1
        if settings.server.workers > 1:
            return await _serve_workers(settings, supervisor, signals, stop)
        return await _serve(settings, supervisor, signals)
    finally:
        await supervisor.stop()


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


async def _serve(settings: Settings, supervisor: EngineSupervisor, signals: StopSignals) -> int:
    prepared = prepare(
        settings.replace(upstream=supervisor.base_url),
        AppParts(supervisor=supervisor, engine_api_key=supervisor.api_key),
    )
    if prepared is None:
        return 2
    server, telemetry = prepared
    signals.server = server
    failed = False

    async def announce() -> None:
        nonlocal failed
        try:
            await supervisor.wait_ready()
        except EngineStartError:  # the supervisor has logged why, with the end of the engine log
            failed = True
            server.should_exit = True
            return
        print(banner(settings, supervisor.served_model_name, demo_token(settings)), flush=True)

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
    settings: Settings, supervisor: EngineSupervisor, signals: StopSignals, stop: asyncio.Event
) -> int:
    """``--workers N``: the engine's supervisor stays here; N gateway workers serve the port."""
    from gateway.workers import serve_workers  # only this mode needs it

    failed = False

    async def announce() -> None:
        nonlocal failed
        try:
            await supervisor.wait_ready()
        except EngineStartError:  # the supervisor has logged why
            failed = True
            stop.set()
            return
        print(banner(settings, supervisor.served_model_name, demo_token(settings)), flush=True)

    announcer = asyncio.create_task(announce())
    try:
        code = await serve_workers(
            settings.replace(upstream=supervisor.base_url), signals, stop, engine_api_key=supervisor.api_key
        )
    finally:
        announcer.cancel()
        await asyncio.wait({announcer})
    return 1 if failed else code


__all__ = ["banner", "default_profile", "demo_token", "parse_engine_args", "run_up"]
