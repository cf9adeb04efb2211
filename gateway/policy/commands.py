"""``gateway policy check DIR`` and ``gateway policy test DIR``: validate and try a bundle before shipping.

The lead CLI calls `register` and then ``args.func(args)``; ``python -m gateway.policy.commands``
runs the same commands standalone.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from gateway.guardrails import compile_guardrails
from gateway.policy.golden import load_cases, run_case
from gateway.policy.problems import PolicyError, PolicyLoadError
from gateway.policy.sections import ALL_WHERE, PolicyBundle, Where, WordRule
from gateway.policy.store import GuardrailCompiler, PolicySnapshot, PolicyStore


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``policy check`` and ``policy test`` to a CLI's subcommands."""
    policy = subparsers.add_parser("policy", help="validate and test policy bundles")
    commands = policy.add_subparsers(dest="policy_command", required=True, metavar="{check,test}")

    check_cmd = commands.add_parser("check", help="validate a bundle; list every problem with file and line")
    check_cmd.add_argument("dir", type=Path, help="bundle directory, e.g. policies/default")
    check_cmd.set_defaults(func=run_check)

    test_cmd = commands.add_parser(
        "test", help="scan one text (--text) or run the bundle's golden cases in DIR/tests/*.yaml"
    )
    test_cmd.add_argument("dir", type=Path, help="bundle directory")
    test_cmd.add_argument("--text", help="text to scan; prints the verdict as JSON")
    test_cmd.add_argument("--where", choices=ALL_WHERE, default="input", help="where the text appears")
    test_cmd.add_argument("--client", help="client id whose overrides apply")
    test_cmd.add_argument("--json", action="store_true", help="compact JSON output")
    test_cmd.set_defaults(func=run_test)


def run_check(args: argparse.Namespace) -> int:
    return check(args.dir)


def run_test(args: argparse.Namespace) -> int:
    if args.text is not None:
        return scan_text(args.dir, args.text, where=args.where, client=args.client, compact=args.json)
    return run_golden(args.dir, compact=args.json)


def check(
    directory: Path, *, out: TextIO | None = None, compiler: GuardrailCompiler = compile_guardrails
) -> int:
    """Exit status 1 with every problem listed, else 0 with a one-line summary."""
    out = out or sys.stdout
    snapshot = _open(directory, out, compiler)
    _, case_errors = load_cases(directory)
    if case_errors:
        _report(case_errors, directory, out)
        return 1
    if snapshot is None:
        return 1
    print(summary(snapshot), file=out)
    return 0


def scan_text(
    directory: Path,
    text: str,
    *,
    where: Where = "input",
    client: str | None = None,
    compact: bool = False,
    out: TextIO | None = None,
    compiler: GuardrailCompiler = compile_guardrails,
) -> int:
    """Print the verdict for one text as JSON: action, hits and the text after masking."""
    out = out or sys.stdout
    snapshot = _open(directory, out, compiler)
    if snapshot is None:
        return 1
    if client is not None and client not in snapshot.bundle.clients.clients:
        print(f"unknown client {client!r} (not in clients.yaml)", file=out)
        return 1
    verdict = snapshot.guardrails.scan(text, where, client_id=client)
    print(json.dumps(verdict.to_json(), ensure_ascii=False, indent=None if compact else 2), file=out)
    return 0


def run_golden(
    directory: Path,
    *,
    compact: bool = False,
    out: TextIO | None = None,
    compiler: GuardrailCompiler = compile_guardrails,
) -> int:
    """Run DIR/tests/*.yaml; exit status 1 on any mismatch, printing each."""
    out = out or sys.stdout
    snapshot = _open(directory, out, compiler)
    if snapshot is None:
        return 1
    cases, errors = load_cases(directory)
    if errors:
        _report(errors, directory, out)
        return 1
    clients = list(snapshot.bundle.clients.clients)
    failures = [
        f
        for f in (run_case(snapshot.guardrails, case, clients, snapshot.bundle) for case in cases)
        if f is not None
    ]
    if compact:
        report = {
            "version": snapshot.short_version,
            "cases": len(cases),
            "failed": [
                {
                    "file": f.case.file,
                    "line": f.case.line,
                    "name": f.case.case.name,
                    "problems": list(f.problems),
                }
                for f in failures
            ],
        }
        print(json.dumps(report, ensure_ascii=False), file=out)
    else:
        for failure in failures:
            print(f"FAIL {failure}", file=out)
        passed = len(cases) - len(failures)
        print(f"{passed}/{len(cases)} golden cases passed (policy {snapshot.short_version})", file=out)
    return 1 if failures or not cases else 0


def summary(snapshot: PolicySnapshot) -> str:
    bundle = snapshot.bundle
    return (
        f"policy OK: version {snapshot.short_version}, {len(bundle.guardrails.rules)} rules, "
        f"{count_words(bundle)} words, {len(bundle.clients.clients)} clients, "
        f"{len(bundle.limits.tiers)} tiers"
    )


def count_words(bundle: PolicyBundle) -> int:
    """Distinct words the word rules match, from lists and inline."""
    words: set[str] = set()
    for rule in bundle.guardrails.rules:
        if isinstance(rule, WordRule):
            words.update(rule.words)
            for name in rule.lists:
                words.update(bundle.word_lists.get(name, ()))
    return len(words)


def _open(directory: Path, out: TextIO, compiler: GuardrailCompiler) -> PolicySnapshot | None:
    try:
        return PolicyStore.open(directory, compiler=compiler).current
    except PolicyLoadError as exc:
        _report(exc.errors, directory, out)
        return None


def _report(errors: Sequence[PolicyError], directory: Path, out: TextIO) -> None:
    for error in sorted(errors):
        print(error, file=out)
    print(f"{len(errors)} error{'s' if len(errors) != 1 else ''} in {directory}", file=out)


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry point: ``python -m gateway.policy.commands policy check DIR``."""
    parser = argparse.ArgumentParser(prog="gateway")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    status: int = args.func(args)
    return status


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["check", "count_words", "main", "register", "run_check", "run_golden", "run_test", "scan_text"]
