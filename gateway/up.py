"""``gateway up``: the colocated engine and the gateway as one service.

The supervisor starts vLLM on loopback behind a random internal key; the gateway is the only door. The
gateway serves at once (``/readyz`` is 503 until the engine is healthy), and the banner with the URL, a
ready bearer token and a curl example is printed when the engine is up.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sys

from engine.supervisor import EngineSupervisor, SupervisorConfig, SupervisorConfigError
from gateway.app import AppParts
from gateway.serve import prepare
from gateway.settings import Settings

log = logging.getLogger("menshen.up")
DEMO_CLIENT = "demo-app"


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
    try:
        config = SupervisorConfig(
            profile=profile or default_profile(),
            overrides=parse_engine_args(engine_args),
            data_dir=settings.data_dir,
            otlp_traces_endpoint=os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
        )
    except SupervisorConfigError as exc:
        print(f"gateway up: invalid engine configuration: {exc}", file=sys.stderr)
        return 2
    supervisor = EngineSupervisor(config)
    await supervisor.start()
    try:
        prepared = prepare(
            settings.replace(upstream=supervisor.base_url),
            AppParts(supervisor=supervisor, engine_api_key=supervisor.api_key),
        )
        if prepared is None:
            return 2
        server, telemetry = prepared

        async def announce() -> None:
            await supervisor.wait_ready()
            print(banner(settings, supervisor.served_model_name, demo_token(settings)), flush=True)

        announcer = asyncio.create_task(announce())
        try:
            await server.serve()
        finally:
            announcer.cancel()
            telemetry.shutdown()
    finally:
        await supervisor.stop()
    return 0


__all__ = ["banner", "default_profile", "demo_token", "parse_engine_args", "run_up"]
