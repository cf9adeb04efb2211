"""The models a profile can name as prepared from a PyPI package, and how each is prepared."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from engine.demo_model import DEMO_MODEL_NAME, demo_model_dir, is_demo_model_ready
from engine.embedding_model import EMBEDDING_MODEL_NAME, embedding_model_dir, is_embedding_model_ready


@dataclass(frozen=True, slots=True)
class PackagedModel:
    """A model folder built once under ``DATA_DIR/models`` from a package."""

    name: str
    module: str
    """``python -m MODULE DATA_DIR`` prepares it, in a process of its own (torch stays out of ours)."""
    folder: Callable[[Path], Path]
    ready: Callable[[Path], bool]


PACKAGED_MODELS: Mapping[str, PackagedModel] = MappingProxyType(
    {
        DEMO_MODEL_NAME: PackagedModel(
            DEMO_MODEL_NAME, "engine.demo_model", demo_model_dir, is_demo_model_ready
        ),
        EMBEDDING_MODEL_NAME: PackagedModel(
            EMBEDDING_MODEL_NAME, "engine.embedding_model", embedding_model_dir, is_embedding_model_ready
        ),
    }
)

__all__ = ["PACKAGED_MODELS", "PackagedModel"]
