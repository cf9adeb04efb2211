"""``gateway audit ...`` commands: verify a trail, compute a content HMAC for an incident.

They take the gateway's settings flags and ``GATEWAY_*`` variables: by default they read the trail
(``--audit-log``) and the audit key (``DATA_DIR/audit.key``) that ``gateway serve`` writes. ``verify``
takes a file or a directory (every chain in it: one per worker with ``--workers N``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from gateway.settings import ConfigError, Settings, add_settings_flags, settings_from_args
from gateway.telemetry.audit import (
    AuditKeyError,
    content_hmac,
    load_or_create_key,
    verify_chains,
    worker_path,
)


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``audit verify FILE [--key-file K]`` and ``audit hmac --key-file K`` to the CLI."""
    audit = subparsers.add_parser("audit", help="audit trail tools")
    sub = audit.add_subparsers(dest="audit_command", required=True)

    v = sub.add_parser(
        "verify",
        help="check the hash chain of an audit file and its rotated files, or of every chain in a directory",
    )
    v.add_argument(
        "file",
        type=Path,
        nargs="?",
        help=(
            "the audit file (its rotated FILE.N files are checked too) or a directory (every chain in it); "
            "default --audit-log, or its directory when workers wrote files of their own beside it"
        ),
    )
    v.add_argument(
        "--key-file",
        type=Path,
        help="audit key: also check each record's MAC (default DATA_DIR/audit.key if present)",
    )
    add_settings_flags(v)
    v.set_defaults(func=_verify)

    h = sub.add_parser("hmac", help="content HMAC of stdin, to match audit records' content_hmac")
    h.add_argument("--key-file", type=Path, help="audit key (default DATA_DIR/audit.key)")
    add_settings_flags(h)
    h.set_defaults(func=_hmac)


def _key(path: Path | None) -> bytes | None:
    if path is None:
        return None
    if not path.exists():
        raise AuditKeyError(f"audit key file {path} not found")
    return load_or_create_key(path)


def _settings(args: argparse.Namespace) -> Settings | None:
    try:
        return settings_from_args(args)
    except ConfigError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return None


def _verify(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if settings is None:
        return 2
    key_file = args.key_file
    if key_file is None and settings.audit_key_path.is_file():
        key_file = settings.audit_key_path
    try:
        key = _key(key_file)
    except (AuditKeyError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    target = args.file or _default_target(settings.audit_path)
    results = verify_chains(target, key)
    checked = "chain and MACs" if key is not None else "chain"
    failed = 0
    for path, result in results:
        name = f"{path}: " if len(results) > 1 or target.is_dir() else ""
        if result.ok:
            print(f"{name}OK: {result.records} records, last seq {result.last_seq}, {checked} intact")
        else:
            failed += 1
            print(f"{name}FAILED after {result.records} good records: {result.first_error}")
    return 1 if failed else 0


def _default_target(audit_path: Path) -> Path:
    """The configured trail, or its directory once workers (``--workers N``) wrote trails beside it."""
    return audit_path.parent if worker_path(audit_path, 1).exists() else audit_path


def _hmac(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if settings is None:
        return 2
    try:
        key = _key(args.key_file or settings.audit_key_path)
    except (AuditKeyError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if key is None:
        return 1
    print(content_hmac(key, sys.stdin.read().removesuffix("\n")))
    return 0


__all__ = ["register"]
