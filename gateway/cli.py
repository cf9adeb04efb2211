"""The ``gateway`` command: serve | up | policy check/test | client add | keys rotate | token | audit verify.

Every command that touches the installation (``serve``, ``up``, ``token``, ``client add``, ``keys rotate``,
``audit verify``) takes the same settings flags, generated from ``Settings``, and the same ``GATEWAY_*``
variables, so that each derives paths and the issuer URL the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from gateway import __version__
from gateway.settings import ConfigError, add_settings_flags, settings_from_args

# Settings `gateway up` sets itself: the engine it starts listens on a port and key of its own.
_UP_MANAGED = frozenset({"upstream", "upstream_api_key_file"})


def _serve(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(args)
    except ConfigError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    if settings.server.workers > 1:
        from gateway.workers import run_node

        return run_node(settings)
    from gateway.serve import run_server

    return run_server(settings)


def _up(args: argparse.Namespace) -> int:
    from gateway.up import run_up

    try:
        settings = settings_from_args(args)
    except ConfigError as exc:
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
    add_settings_flags(serve)
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
    add_settings_flags(up, skip=_UP_MANAGED)
    up.set_defaults(func=_up)

    policy_commands.register(sub)
    auth_commands.register(sub)
    audit_commands.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    result: object = args.func(args)
    return int(result) if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
