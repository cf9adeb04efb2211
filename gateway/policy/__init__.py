"""Policy bundles: the typed model, the loader and validator, immutable snapshots and hot reload."""

from gateway.policy.loader import LoadedBundle, bundle_version, load_bundle, read_bundle_files, validate_files
from gateway.policy.problems import PolicyError, PolicyLoadError
from gateway.policy.sections import PolicyBundle
from gateway.policy.store import (
    GuardrailCompiler,
    GuardrailScanner,
    PolicySnapshot,
    PolicyStore,
    ReloadHook,
    build_snapshot,
)
from gateway.policy.watcher import install_sighup, watch

__all__ = [
    "GuardrailCompiler",
    "GuardrailScanner",
    "LoadedBundle",
    "PolicyBundle",
    "PolicyError",
    "PolicyLoadError",
    "PolicySnapshot",
    "PolicyStore",
    "ReloadHook",
    "build_snapshot",
    "bundle_version",
    "install_sighup",
    "load_bundle",
    "read_bundle_files",
    "validate_files",
    "watch",
]
