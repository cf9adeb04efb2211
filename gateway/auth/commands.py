"""CLI commands of the built-in issuer: ``client add``, ``keys rotate`` and ``token``.

``register(subparsers)`` adds them to the gateway's argparse CLI; each sets ``args.func(args) -> int``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gateway.auth.clientstore import ClientStore, SecretsFileError
from gateway.auth.config import (
    AuthConfig,
    default_issuer,
    default_key_file,
    default_secrets_file,
)
from gateway.auth.keystore import KeyFile, KeyFileError, mint_token, signing_key

_MAX_TTL = AuthConfig.model_fields["max_token_ttl_s"].default
_AUDIENCE = AuthConfig.model_fields["builtin_audience"].default


def _add_key_file(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--key-file",
        type=Path,
        default=default_key_file(),
        help="Issuer key file (env GATEWAY_AUTH_KEY_FILE).",
    )


def _add_secrets_file(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--secrets-file",
        type=Path,
        default=default_secrets_file(),
        help="Client secrets file (env GATEWAY_AUTH_SECRETS_FILE).",
    )


def _scope_list(values: list[str] | None) -> list[str]:
    # Accept both "--scope a --scope b" and "--scope 'a b'".
    return sorted({s for v in values or [] for s in v.split()})


def cmd_client_add(args: argparse.Namespace) -> int:
    try:
        secret = ClientStore(args.secrets_file).add(args.id, _scope_list(args.scope), replace=args.replace)
    except (SecretsFileError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"client_id:     {args.id}")
    print(f"client_secret: {secret}")
    print("The secret is shown only this once; only its argon2 hash is stored.", file=sys.stderr)
    return 0


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    try:
        key = KeyFile(args.key_file).rotate(args.max_token_ttl)
    except (KeyFileError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"new signing key {key.kid}; older keys are kept until their tokens expire")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    if not 1 <= args.ttl <= _MAX_TTL:
        print(f"error: --ttl must be between 1 and {_MAX_TTL} seconds", file=sys.stderr)
        return 2
    try:
        keys = KeyFile(args.key_file).ensure()
    except (KeyFileError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    token = mint_token(
        signing_key(keys),
        issuer=args.issuer.rstrip("/"),
        audience=args.audience,
        client_id=args.client,
        scopes=_scope_list(args.scope),
        ttl_s=args.ttl,
    )
    print(token)
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``client``, ``keys`` and ``token`` to the gateway CLI."""
    client = subparsers.add_parser("client", help="Manage clients of the built-in issuer.")
    client_sub = client.add_subparsers(dest="client_command", required=True)
    add = client_sub.add_parser("add", help="Create a client and print its secret once.")
    add.add_argument("id", help="Client id.")
    add.add_argument("--scope", action="append", help="Scope the client may request (repeatable).")
    add.add_argument("--replace", action="store_true", help="Replace the secret of an existing client.")
    _add_secrets_file(add)
    add.set_defaults(func=cmd_client_add)

    keys = subparsers.add_parser("keys", help="Manage the built-in issuer's signing keys.")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    rotate = keys_sub.add_parser(
        "rotate", help="Add a new signing key; old keys stay until their tokens expire."
    )
    rotate.add_argument(
        "--max-token-ttl", type=int, default=_MAX_TTL, help="Longest token lifetime, in seconds."
    )
    _add_key_file(rotate)
    rotate.set_defaults(func=cmd_keys_rotate)

    token = subparsers.add_parser("token", help="Mint an access token with the key file (operators, demos).")
    token.add_argument("--client", required=True, help="Client id (sub and client_id of the token).")
    token.add_argument("--scope", action="append", help="Scope to put in the token (repeatable).")
    token.add_argument("--ttl", type=int, default=3600, help="Lifetime in seconds (default 3600).")
    token.add_argument(
        "--issuer",
        default=default_issuer(),
        help="Issuer URL, as the server uses it (env GATEWAY_AUTH_ISSUER).",
    )
    token.add_argument("--audience", default=_AUDIENCE, help="Audience (default %(default)s).")
    _add_key_file(token)
    token.set_defaults(func=cmd_token)
