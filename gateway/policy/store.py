"""Immutable policy snapshots and the store that swaps them atomically on reload.

A request reads ``store.current`` once and keeps that snapshot to the end, so it sees one
consistent policy even if a reload lands mid-stream. A reload validates the whole bundle and
compiles its guardrails before the swap; any error keeps the last good snapshot.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from gateway.policy.loader import (
    SECTION_FILES,
    LoadedBundle,
    bundle_version,
    read_bundle_files,
    validate_files,
)
from gateway.policy.problems import PolicyError, PolicyLoadError
from gateway.policy.sections import PolicyBundle, Where

if TYPE_CHECKING:
    from gateway.guardrails.pipeline import StreamCheck
    from gateway.guardrails.verdict import Verdict

logger = logging.getLogger(__name__)
_SETTLE_ATTEMPTS = 3
SHORT_VERSION_LEN = 12


class GuardrailScanner(Protocol):
    """What a snapshot needs from compiled guardrails (``gateway.guardrails.CompiledGuardrails``)."""

    def scan(self, text: str, where: Where, client_id: str | None = None) -> Verdict: ...

    def stream_check(self, client_id: str | None, *, json_content: bool = False) -> StreamCheck: ...


GuardrailCompiler = Callable[[PolicyBundle], GuardrailScanner]
ReloadHook = Callable[[bool, str, Sequence[PolicyError]], None]
"""Called after every reload attempt as ``hook(ok, version, errors)``; version is the one in force."""


@dataclass(frozen=True, slots=True)
class PolicySnapshot:
    """One loaded bundle; never mutated, replaced whole on reload."""

    bundle: PolicyBundle
    version: str
    loaded_at: datetime
    source_dir: Path
    guardrails: GuardrailScanner = field(repr=False)
    files: tuple[str, ...] = ()

    @property
    def short_version(self) -> str:
        return self.version[:SHORT_VERSION_LEN]


def build_snapshot(
    loaded: LoadedBundle, source_dir: Path, compiler: GuardrailCompiler
) -> PolicySnapshot | list[PolicyError]:
    try:
        guardrails = compiler(loaded.bundle)
    except Exception as exc:  # any failure to compile must keep the old policy, never crash the gateway
        logger.exception("policy guardrails failed to compile")
        return [
            PolicyError("guardrails.yaml", 1, f"guardrails failed to compile: {type(exc).__name__}: {exc}")
        ]
    return PolicySnapshot(
        bundle=loaded.bundle,
        version=loaded.version,
        loaded_at=datetime.now(UTC),
        source_dir=source_dir,
        guardrails=guardrails,
        files=loaded.files,
    )


def load_settled(source_dir: Path, *, required: Sequence[str] = ()) -> LoadedBundle | list[PolicyError]:
    """Validate the bundle, then re-read it: if the files changed meanwhile, try again.

    This turns a save landing during validation into a retry instead of a snapshot of a mix of
    old and new files.
    """
    for _ in range(_SETTLE_ATTEMPTS):
        files, errors = read_bundle_files(source_dir)
        if not source_dir.is_dir():
            return errors
        result = validate_files(files, required=required)
        if isinstance(result, list):
            errors += result
        after, _ = read_bundle_files(source_dir)
        if bundle_version(after) != bundle_version(files):
            continue
        if errors or isinstance(result, list):
            return sorted(set(errors))
        return result
    return [PolicyError(".", 1, "the bundle kept changing while it was being loaded; it will be retried")]


class PolicyStore:
    """Holds the current `PolicySnapshot`; `reload` swaps it only for a fully valid bundle."""

    def __init__(
        self,
        snapshot: PolicySnapshot,
        *,
        compiler: GuardrailCompiler,
        hooks: Sequence[ReloadHook] = (),
    ) -> None:
        self._current = snapshot
        self._hooks = tuple(hooks)
        self._compiler = compiler
        self._last_error: tuple[PolicyError, ...] = ()
        self._lock = threading.Lock()  # serialises reloads from the watcher thread and SIGHUP

    @classmethod
    def open(
        cls,
        source_dir: Path,
        *,
        compiler: GuardrailCompiler,
        hooks: Sequence[ReloadHook] = (),
    ) -> PolicyStore:
        """Load ``source_dir``; raise `PolicyLoadError` with every problem if it is invalid.

        ``compiler`` turns a bundle into its guardrails (``gateway.guardrails.compile_guardrails``); the
        app passes it in, so that the policy package does not depend on the guardrails package.
        """
        source_dir = source_dir.resolve()
        loaded = load_settled(source_dir)
        if isinstance(loaded, list):
            raise PolicyLoadError(loaded)
        snapshot = build_snapshot(loaded, source_dir, compiler)
        if isinstance(snapshot, list):
            raise PolicyLoadError(snapshot)
        logger.info("policy loaded: version %s from %s", snapshot.short_version, source_dir)
        return cls(snapshot, compiler=compiler, hooks=hooks)

    @property
    def current(self) -> PolicySnapshot:
        return self._current

    @property
    def last_error(self) -> tuple[PolicyError, ...]:
        """Problems of the last reload attempt; empty when it succeeded."""
        return self._last_error

    def reload(self) -> bool:
        """Reload from disk; True if the bundle on disk is now in force (changed or not)."""
        with self._lock:
            ok, errors = self._reload_locked()
            version = self._current.version
        if errors:
            logger.error(
                "policy reload failed, keeping version %s:\n%s",
                version[:SHORT_VERSION_LEN],
                "\n".join(f"  {e}" for e in errors),
            )
        for hook in self._hooks:
            try:
                hook(ok, version, errors)
            except Exception:  # a broken metrics or audit hook must not break reloading
                logger.exception("policy reload hook failed")
        return ok

    def _reload_locked(self) -> tuple[bool, tuple[PolicyError, ...]]:
        current = self._current
        # A section file present in the good bundle must stay: a deletion mid-save (or by mistake)
        # would otherwise load that section's permissive defaults.
        required = [f for f in current.files if f in SECTION_FILES]
        files, read_errors = read_bundle_files(current.source_dir)
        if not read_errors and bundle_version(files) == current.version:
            self._last_error = ()
            return True, ()
        loaded = load_settled(current.source_dir, required=required)
        if isinstance(loaded, LoadedBundle) and loaded.version == current.version:
            self._last_error = ()
            return True, ()
        snapshot = (
            loaded if isinstance(loaded, list) else build_snapshot(loaded, current.source_dir, self._compiler)
        )
        if isinstance(snapshot, list):
            self._last_error = tuple(snapshot)
            return False, self._last_error
        self._current = snapshot
        self._last_error = ()
        logger.info("policy reloaded: version %s", snapshot.short_version)
        return True, ()

    def status(self) -> dict[str, object]:
        """For /readyz: ``{"version", "loaded_at", "last_error"}``; last_error is None or a list."""
        snapshot = self._current
        errors = self._last_error
        return {
            "version": snapshot.short_version,
            "loaded_at": snapshot.loaded_at.isoformat(),
            "last_error": [e.to_json() for e in errors] if errors else None,
        }


__all__ = [
    "GuardrailCompiler",
    "GuardrailScanner",
    "PolicySnapshot",
    "PolicyStore",
    "ReloadHook",
    "build_snapshot",
    "load_settled",
]
