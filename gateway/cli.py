"""The ``gateway`` command: serve | up | policy check/test | client add | keys rotate | token | audit verify.

Every ``serve``/``up`` flag is generated from ``Settings``, so each has its ``GATEWAY_*`` variable too.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import Any, get_args

from pydantic.fields import FieldInfo

from gateway import __version__
from gateway.settings import Settings, SettingsError, load_settings

# Fields `gateway up` sets itself; the rest are shared with `serve`.
_UP_MANAGED = {"upstream", "upstream_api_key_file"}


def _add_settings_flags(parser: argparse.ArgumentParser, skip: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    group = parser.add_argument_group("settings (each also read from GATEWAY_<NAME>)")
    for name, info in Settings.model_fields.items():
        if name in skip:
            continue
        flag = "--" + name.replace("_", "-")
        env = f"GATEWAY_{name.upper()}"
        group.add_argument(
            flag,
            dest=f"setting_{name}",
            default=None,
            metavar=_metavar(info),
            help=f"{info.description or ''} [{env}]",
        )


def _metavar(info: FieldInfo) -> str:
    args = get_args(info.annotation)
    if info.annotation is bool or bool in args:
        return "BOOL"
    return "VALUE"


def settings_from_args(args: argparse.Namespace) -> Settings:
    overrides = {
        key.removeprefix("setting_"): value
        for key, value in vars(args).items()
        if key.startswith("setting_") and value is not None
    }
    return load_settings(**overrides)


def _serve(args: argparse.Namespace) -> int:
    from gateway.serve import run_server

    try:
        settings = settings_from_args(args)
    except SettingsError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    return run_server(settings)


def _up(args: argparse.Namespace) -> int:
    from gateway.up import run_up

    try:
        settings = settings_from_args(args)
    except SettingsError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(run_up(settings, profile=args.profile, engine_args=args.engine_arg or []))


def build_parser() -> argparse.ArgumentParser:
    from gateway.auth import commands as auth_commands
    from gateway.policy import commands as policy_commands
    from gateway.telemetry import commands as audit_commands

    parser = argparse.ArgumentParser(
        prog="gateway", description="Menshen: a secure gateway in front of vLLM."
    )
    parser.add_argument("--version", action="version", version=f"menshen {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the gateway in front of an OpenAI-compatible engine")
    _add_settings_flags(serve)
    serve.set_defaults(func=_serve)

    up = sub.add_parser("up", help="start the colocated vLLM engine and the gateway as one service")
    up.add_argument(
        "--profile", default=None, help="cpu-demo (default without a GPU), qwen3-8b, qwen3-8b-awq"
    )
    up.add_argument(
        "--engine-arg",
        action="append",
        metavar="NAME=VALUE",
        help="override a vLLM argument of the profile, e.g. max-model-len=8192 (repeatable; NAME= removes it)",
    )
    _add_settings_flags(up, skip=_UP_MANAGED)
    up.set_defaults(func=_up)

    policy_commands.register(sub)
    auth_commands.register(sub)
    audit_commands.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    result: Any = args.func(args)
    return int(result or 0) if isinstance(result, int | None) else 1


if __name__ == "__main__":
    sys.exit(main())
