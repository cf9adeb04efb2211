"""Hot reload with a real watcher on a temporary bundle directory (and SIGHUP)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest

from gateway.policy import PolicyError, PolicySnapshot, PolicyStore, install_sighup, watch
from tests.support.policy import VALID_BUNDLE, WordScanner, write_bundle

DEBOUNCE_MS = 200


class Recorder:
    """Reload hook that keeps every attempt and the snapshot in force after it."""

    def __init__(self) -> None:
        self.store: PolicyStore | None = None
        self.attempts: list[tuple[bool, PolicySnapshot, tuple[PolicyError, ...]]] = []

    def __call__(self, ok: bool, version: str, errors: Sequence[PolicyError]) -> None:
        assert self.store is not None
        self.attempts.append((ok, self.store.current, tuple(errors)))


@contextlib.asynccontextmanager
async def watched(root: Path) -> AsyncIterator[tuple[PolicyStore, Recorder]]:
    recorder = Recorder()
    store = PolicyStore.open(root, compiler=WordScanner, hooks=[recorder])
    recorder.store = store
    stop = asyncio.Event()
    task = asyncio.create_task(watch(store, debounce_ms=DEBOUNCE_MS, stop_event=stop))
    await asyncio.sleep(0.3)  # let the watcher register before the test edits files
    try:
        yield store, recorder
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=5)


async def wait_for(condition: Callable[[], bool], within: float) -> float:
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > within:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return write_bundle(tmp_path / "bundle", VALID_BUNDLE)


async def test_valid_edit_takes_effect_within_2s_and_inflight_snapshot_is_stable(root: Path) -> None:
    async with watched(root) as (store, _):
        in_flight = store.current  # a request that started before the edit
        (root / "lists" / "secrets.txt").write_text("sesame\nabracadabra\n", encoding="utf-8")
        elapsed = await wait_for(lambda: store.current is not in_flight, within=2.0)
        assert elapsed < 2.0
        assert store.current.guardrails.scan("abracadabra", "output").action == "mask"
        assert in_flight.guardrails.scan("abracadabra", "output").action == "allow"
        assert in_flight.bundle.word_lists["secrets"] == ("sesame", "open-sesame")


async def test_invalid_edit_keeps_old_snapshot_and_surfaces_error(root: Path) -> None:
    async with watched(root) as (store, recorder):
        good = store.current
        (root / "limits.yaml").write_text("tiers:\n  standard:\n    requests: 10/eon\n", encoding="utf-8")
        await wait_for(lambda: bool(store.last_error), within=2.0)
        assert store.current is good
        assert store.last_error[0].file == "limits.yaml"
        assert store.last_error[0].line == 3
        status = store.status()
        assert status["version"] == good.short_version
        assert status["last_error"]
        assert recorder.attempts[-1][0] is False
        # fixing the file recovers
        (root / "limits.yaml").write_text(VALID_BUNDLE["limits.yaml"], encoding="utf-8")
        await wait_for(lambda: not store.last_error, within=2.0)
        assert store.current is good  # same content as the good bundle: nothing to swap


async def test_rapid_saves_load_few_times_and_never_a_partial_bundle(root: Path) -> None:
    target = root / "lists" / "secrets.txt"
    async with watched(root) as (store, recorder):
        for i in range(100):
            full = f"sesame\nmarker-{i}\nend-of-list\n"
            with target.open("w", encoding="utf-8") as fh:  # a save in two writes: half, then the rest
                fh.write(full[: len(full) // 2])
                fh.flush()
                fh.write(full[len(full) // 2 :])
            await asyncio.sleep(0.002)
        await wait_for(lambda: store.current.bundle.word_lists["secrets"][1:2] == ("marker-99",), within=3.0)
        await asyncio.sleep(DEBOUNCE_MS / 1000 * 2)  # any reload still pending would show up now
    swaps = [snap for ok, snap, _ in recorder.attempts if ok]
    assert 1 <= len({s.version for s in swaps}) <= 5
    for snap in swaps:
        words = snap.bundle.word_lists["secrets"]
        assert len(words) == 3, words
        assert words[2] == "end-of-list", words
    assert not [errors for ok, _, errors in recorder.attempts if not ok]


async def test_delete_and_recreate_mid_save_never_loads_defaults(root: Path) -> None:
    target = root / "guardrails.yaml"
    content = target.read_text(encoding="utf-8")
    async with watched(root) as (store, recorder):
        good = store.current
        for _ in range(5):  # editors that save by unlink + create
            target.unlink()
            await asyncio.sleep(0.01)
            target.write_text(content, encoding="utf-8")
        (root / "audit.yaml").write_text("on_failure: block\n", encoding="utf-8")
        await wait_for(lambda: store.current.bundle.audit.on_failure == "block", within=2.0)
        assert store.current.bundle.guardrails.rules == good.bundle.guardrails.rules
    assert all(snap.bundle.guardrails.rules for _, snap, _ in recorder.attempts)


async def test_editor_temp_files_do_not_trigger_reload(root: Path) -> None:
    async with watched(root) as (_, recorder):
        (root / ".guardrails.yaml.swp").write_bytes(b"\x00swap")
        (root / "4913").write_bytes(b"")
        (root / "guardrails.yaml~").write_text("rules: [", encoding="utf-8")
        await asyncio.sleep(DEBOUNCE_MS / 1000 * 3)
    assert recorder.attempts == []


async def test_sighup_reloads(root: Path) -> None:
    recorder = Recorder()
    store = PolicyStore.open(root, compiler=WordScanner, hooks=[recorder])
    recorder.store = store
    loop = asyncio.get_running_loop()
    install_sighup(loop, store)
    try:
        before = store.current
        (root / "audit.yaml").write_text("on_failure: block\n", encoding="utf-8")
        os.kill(os.getpid(), signal.SIGHUP)
        await wait_for(lambda: store.current is not before, within=2.0)
        assert store.current.bundle.audit.on_failure == "block"
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
