"""Snapshots and reload: swap only a fully valid bundle, keep the last good one on any error."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from gateway.policy import PolicyBundle, PolicyError, PolicyLoadError, PolicyStore
from tests.support.policy import WordScanner

Compiler = Callable[[PolicyBundle], WordScanner]


def test_open_builds_snapshot_with_compiled_guardrails(bundle_dir: Path, compiler: Compiler) -> None:
    store = PolicyStore.open(bundle_dir, compiler=compiler)
    snap = store.current
    assert snap.source_dir == bundle_dir.resolve()
    assert snap.short_version == snap.version[:12]
    assert snap.guardrails.scan("no forbidden-word here", "input").action == "block"
    status = store.status()
    assert status == {
        "version": snap.short_version,
        "loaded_at": snap.loaded_at.isoformat(),
        "last_error": None,
    }


def test_open_refuses_invalid_bundle_with_full_error_list(bundle_dir: Path, compiler: Compiler) -> None:
    (bundle_dir / "limits.yaml").write_text("tiers:\n  standard:\n    requests: 5/eon\n", encoding="utf-8")
    (bundle_dir / "lists" / "secrets.txt").write_text("\x00\n", encoding="utf-8")
    with pytest.raises(PolicyLoadError) as info:
        PolicyStore.open(bundle_dir, compiler=compiler)
    assert {(e.file, e.line) for e in info.value.errors} == {("limits.yaml", 3), ("lists/secrets.txt", 1)}
    assert "limits.yaml:3:" in str(info.value)


def test_compile_failure_is_a_load_error(bundle_dir: Path) -> None:
    def broken(bundle: PolicyBundle) -> WordScanner:
        raise RuntimeError("automaton too large")

    with pytest.raises(PolicyLoadError) as info:
        PolicyStore.open(bundle_dir, compiler=broken)
    assert "automaton too large" in info.value.errors[0].message


def test_valid_edit_swaps_and_invalid_edit_keeps_last_good(bundle_dir: Path, compiler: Compiler) -> None:
    calls: list[tuple[bool, str, Sequence[PolicyError]]] = []
    store = PolicyStore.open(bundle_dir, compiler=compiler, hooks=[lambda *a: calls.append(a)])
    first = store.current

    assert store.reload() is True  # unchanged files: no new snapshot
    assert store.current is first

    (bundle_dir / "lists" / "secrets.txt").write_text("sesame\nabracadabra\n", encoding="utf-8")
    assert store.reload() is True
    second = store.current
    assert second.version != first.version
    assert second.guardrails.scan("abracadabra", "output").action == "mask"
    assert first.guardrails.scan("abracadabra", "output").action == "allow"  # old snapshot untouched

    (bundle_dir / "guardrails.yaml").write_text("rules: [\n", encoding="utf-8")
    assert store.reload() is False
    assert store.current is second
    assert store.last_error
    assert store.last_error[0].file == "guardrails.yaml"
    last_error = store.status()["last_error"]
    assert isinstance(last_error, list)
    assert last_error[0]["file"] == "guardrails.yaml"

    assert [(ok, version) for ok, version, _ in calls] == [
        (True, first.version),
        (True, second.version),
        (False, second.version),
    ]
    assert calls[-1][2] == store.last_error


def test_deleting_a_section_file_is_refused(bundle_dir: Path, compiler: Compiler) -> None:
    store = PolicyStore.open(bundle_dir, compiler=compiler)
    good = store.current
    (bundle_dir / "generation.yaml").unlink()
    assert store.reload() is False
    assert store.current is good
    assert [(e.file, "removed" in e.message) for e in store.last_error] == [("generation.yaml", True)]
    (bundle_dir / "generation.yaml").write_text("", encoding="utf-8")  # explicit reset to defaults is fine
    assert store.reload() is True
    assert store.current.bundle.generation.max_tokens_cap == 4096


def test_error_clears_when_files_return_to_the_good_state(bundle_dir: Path, compiler: Compiler) -> None:
    store = PolicyStore.open(bundle_dir, compiler=compiler)
    good = (bundle_dir / "limits.yaml").read_text(encoding="utf-8")
    (bundle_dir / "limits.yaml").write_text("tiers: 3\n", encoding="utf-8")
    assert store.reload() is False
    (bundle_dir / "limits.yaml").write_text(good, encoding="utf-8")
    assert store.reload() is True
    assert store.last_error == ()
    assert store.status()["last_error"] is None


def test_failing_hook_does_not_break_reload(
    bundle_dir: Path, compiler: Compiler, caplog: pytest.LogCaptureFixture
) -> None:
    def bad_hook(ok: bool, version: str, errors: Sequence[PolicyError]) -> None:
        raise ValueError("metrics down")

    store = PolicyStore.open(bundle_dir, compiler=compiler, hooks=[bad_hook])
    (bundle_dir / "audit.yaml").write_text("on_failure: block\n", encoding="utf-8")
    assert store.reload() is True
    assert store.current.bundle.audit.on_failure == "block"
    assert "hook failed" in caplog.text


def test_reader_keeps_one_consistent_snapshot_during_swaps(bundle_dir: Path, compiler: Compiler) -> None:
    """A request takes ``current`` once; concurrent reloads never change what it sees."""
    store = PolicyStore.open(bundle_dir, compiler=compiler)
    stop = threading.Event()
    seen_versions: set[str] = set()
    inconsistent: list[str] = []

    def request() -> None:
        while not stop.is_set():
            snap = store.current
            words = snap.bundle.word_lists["secrets"]
            for _ in range(50):
                # everything read through the snapshot belongs to the same bundle
                if snap.bundle.word_lists["secrets"] != words or store.current.version == "":
                    inconsistent.append(snap.version)
            # the marker word's generation matches the snapshot's own list
            marker = words[-1]
            if snap.guardrails.scan(marker, "input").action != "mask":
                inconsistent.append(snap.version)
            seen_versions.add(snap.version)

    reader = threading.Thread(target=request)
    reader.start()
    try:
        for i in range(20):
            (bundle_dir / "lists" / "secrets.txt").write_text(f"sesame\nmarker{i}\n", encoding="utf-8")
            assert store.reload() is True
    finally:
        stop.set()
        reader.join()
    assert not inconsistent
    assert len(seen_versions) >= 2
