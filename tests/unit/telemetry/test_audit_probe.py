"""``AuditLog.writable``: the cheap check that lets the audit sink notice a lost file and a recovery
without waiting for a record, at most once per probe interval."""

from __future__ import annotations

import shutil
from pathlib import Path

from gateway.telemetry.audit import AuditLog, verify

KEY = bytes(range(32))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_replaced_directory_is_noticed_at_the_next_probe_and_recovery_too(tmp_path: Path) -> None:
    clock = Clock()
    directory = tmp_path / "audit"
    log = AuditLog(directory / "audit.jsonl", KEY, probe_interval_s=1.0, clock=clock)
    assert log.writable()  # the first check opens the file
    assert log.record("policy_reload", result="success")
    shutil.rmtree(directory)
    directory.write_text("a file where the directory was\n")  # unwritable, even for root
    assert log.writable()  # checked recently: no disk access yet
    clock.now += 1.0
    assert not log.writable()
    assert not log.healthy and log.failures == 1

    directory.unlink()
    directory.mkdir()
    clock.now += 0.5
    assert not log.writable()  # the next check is not due yet
    clock.now += 0.5
    assert log.writable() and log.healthy
    assert log.failures == 1  # failed checks while unhealthy are not counted again
    assert log.record("policy_reload", result="success")
    log.close()
    assert verify(directory / "audit.jsonl", key=KEY).ok


def test_a_failed_write_is_retried_by_the_probe_without_a_record(tmp_path: Path) -> None:
    clock = Clock()
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    log = AuditLog(blocker / "audit.jsonl", KEY, probe_interval_s=1.0, clock=clock)
    assert not log.record("policy_reload", result="failure")
    assert not log.writable()
    blocker.unlink()
    blocker.mkdir()
    clock.now += 1.0
    assert log.writable()
    log.close()
    assert (blocker / "audit.jsonl").read_text().count("\n") == 1  # only the file header
