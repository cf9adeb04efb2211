"""CLI commands of the built-in issuer: ``client add``, ``keys rotate`` and ``token``.

``register(subparsers)`` adds them to the gateway's argparse CLI; each sets ``args.func(args) -> int``.
They take the gateway's settings flags and ``GATEWAY_*`` variables, so the files and the issuer URL they
use are the ones ``gateway serve`` with the same flags uses.
"""

from __future__ import annotations

import argparse
import sys

from gateway.auth.authorize import grant_for
from gateway.auth.clientstore import ClientStore, SecretsFileError
from gateway.auth.errors import Forbidden
from gateway.auth.keystore import KeyFile, KeyFileError, mint_token, signing_key
from gateway.auth.principal import Principal
from gateway.policy.loader import load_bundle
from gateway.policy.problems import PolicyLoadError
from gateway.settings import ConfigError, Settings, add_settings_flags, settings_from_args


def _settings(args: argparse.Namespace) -> Settings | None:
    try:
        return settings_from_args(args)
    except ConfigError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return None


def _scope_list(values: list[str] | None) -> list[str]:
    # Accept both "--scope a --scope b" and "--scope 'a b'".
    return sorted({s for v in values or [] for s in v.split()})


def cmd_client_add(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if settings is None:
        return 2
    try:
        store = ClientStore(settings.auth.secrets_path)
        secret = store.add(args.id, _scope_list(args.scope), replace=args.replace)
    except (SecretsFileError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"client_id:     {args.id}")
    print(f"client_secret: {secret}")
    print("The secret is shown only this once; only its argon2 hash is stored.", file=sys.stderr)
    return 0


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if settings is None:
        return 2
    try:
        key = KeyFile(settings.auth.key_path).rotate(settings.auth.max_token_ttl_s)
    except (KeyFileError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"new signing key {key.kid}; older keys are kept until their tokens expire")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if settings is None:
        return 2
    auth = settings.auth
    ttl = auth.token_ttl_s if args.ttl is None else args.ttl
    if not 1 <= ttl <= auth.max_token_ttl_s:
        print(f"error: --ttl must be between 1 and {auth.max_token_ttl_s} seconds", file=sys.stderr)
        return 2
    if "builtin" not in auth.modes:
        print(
            "error: the built-in issuer is off (--auth); the gateway would refuse its tokens", file=sys.stderr
        )
        return 2
    scopes = _scope_list(args.scope)
    problem = _refusal(settings, args.client, scopes)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    try:
        keys = KeyFile(auth.key_path).ensure()
    except (KeyFileError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    token = mint_token(
        signing_key(keys),
        issuer=auth.issuer_url,
        audience=auth.builtin_audience,
        client_id=args.client,
        scopes=scopes,
        ttl_s=ttl,
    )
    print(token)
    return 0


def _refusal(settings: Settings, client_id: str, scopes: list[str]) -> str | None:
    """Why the policy in force would refuse a token for ``client_id`` with ``scopes``, or None."""
    try:
        clients = load_bundle(settings.policies).bundle.clients
    except PolicyLoadError as exc:
        return f"the policy bundle {settings.policies} is invalid ({len(exc.errors)} problems; see `gateway policy check`)"
    if client_id in clients.clients:
        return None
    principal = Principal(client_id, frozenset(scopes), client_id, settings.auth.issuer_url, "-")
    try:
        granted = bool(grant_for(principal, clients).endpoints)
    except Forbidden:
        granted = False
    if not granted:
        named = ", ".join(sorted(clients.clients)) or "none"
        return (
            f"no client {client_id!r} in {settings.policies}/clients.yaml (clients named: {named}), "
            "and no scope of the token grants access; the gateway would refuse its tokens"
        )
    print(f"note: {client_id!r} is not named in clients.yaml; its scopes grant access", file=sys.stderr)
    return None


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``client``, ``keys`` and ``token`` to the gateway CLI."""
    client = subparsers.add_parser("client", help="Manage clients of the built-in issuer.")
    client_sub = client.add_subparsers(dest="client_command", required=True)
    add = client_sub.add_parser("add", help="Create a client and print its secret once.")
    add.add_argument("id", help="Client id.")
    add.add_argument("--scope", action="append", help="Scope the client may request (repeatable).")
    add.add_argument("--replace", action="store_true", help="Replace the secret of an existing client.")
    add_settings_flags(add)
    add.set_defaults(func=cmd_client_add)

    keys = subparsers.add_parser("keys", help="Manage the built-in issuer's signing keys.")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    rotate = keys_sub.add_parser(
        "rotate", help="Add a new signing key; old keys stay until their tokens expire."
    )
    add_settings_flags(rotate)
    rotate.set_defaults(func=cmd_keys_rotate)

    token = subparsers.add_parser(
        "token", help="Mint an access token of the built-in issuer (operators, demos)."
    )
    token.add_argument("--client", required=True, help="Client id (sub and client_id of the token).")
    token.add_argument("--scope", action="append", help="Scope to put in the token (repeatable).")
    token.add_argument("--ttl", type=int, default=None, help="Lifetime in seconds (default --token-ttl).")
    add_settings_flags(token)
    token.set_defaults(func=cmd_token)
