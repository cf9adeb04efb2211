from __future__ import annotations

import argparse
import hashlib
import hmac
import io
import itertools
import json
import os
import stat
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider

from gateway.guardrails.pipeline import Decision
from gateway.telemetry import AuditKeyError, AuditLog, load_or_create_key, verify
from gateway.telemetry.audit import FILE_START, GENESIS, rotated_files
from gateway.telemetry.commands import register

KEY = bytes(range(32))
MATCHED = "Project Nightingale"
TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"


def _decision(i: int, mode: str = "enforce") -> Decision:
    return Decision("words.secret", "confidential", "block", mode, "output", i, i + 19, matched=MATCHED)


def _write(path: Path, n: int, max_bytes: int = 1 << 20, backups: int = 5) -> AuditLog:
    log = AuditLog(path, KEY, max_bytes, backups)
    for i in range(n):
        assert log.record_decision(
            _decision(i, "shadow" if i % 2 else "enforce"), client="team-a", policy_version="v3"
        )
    return log


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def test_records_hold_ids_and_hmac_never_content(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = _write(path, 2)
    tracer = TracerProvider().get_tracer("t")
    with tracer.start_as_current_span("req") as span:
        log.record("auth_failure", client=None, reason="expired", authorization=f"Bearer {TOKEN}")
    log.record("rate_limited", client="team-a", limit="tokens", trace_id="abc")
    log.record("policy_reload", policy_version="v4", ok=True)
    log.close()
    text = path.read_text()
    assert MATCHED not in text
    assert TOKEN not in text
    header, first, second, auth, limited, reload = (json.loads(line) for line in text.splitlines())
    assert (header["seq"], header["kind"], header["prev"]) == (0, FILE_START, GENESIS)
    assert first["seq"] == 1
    assert (first["kind"], first["rule"], first["action"], first["mode"]) == (
        "guardrail",
        "words.secret",
        "block",
        "enforce",
    )
    assert second["mode"] == "shadow"
    assert (first["client"], first["policy_version"], first["start"], first["end"]) == ("team-a", "v3", 0, 19)
    assert first["content_hmac"] == hmac.new(KEY, MATCHED.encode(), hashlib.sha256).hexdigest()
    assert first["time"].endswith("Z")
    assert "T" in first["time"]
    assert auth["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert "content_hmac" not in auth
    assert str(auth["authorization"]).startswith("[REDACTED")
    assert limited["trace_id"] == "abc"
    assert limited["kind"] == "rate_limited"
    assert reload["seq"] == 5
    assert second["prev"] == hashlib.sha256(text.splitlines()[1].encode()).hexdigest()
    result = verify(path, KEY)
    assert (result.ok, result.records, result.first_error, result.last_seq) == (True, 6, None, 5)


def test_callers_cannot_store_content_or_break_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, KEY)
    log.record("guardrail", content=MATCHED, prompt=MATCHED, seq=99, prev="f" * 64, rule="r")
    log.close()
    assert MATCHED not in path.read_text()
    rec = json.loads(_lines(path)[1])
    assert (rec["seq"], rec["x_seq"], rec["x_prev"], rec["rule"]) == (1, 99, "f" * 64, "r")
    assert str(rec["content"]).startswith("[REDACTED LENGTH=19")
    assert verify(path, KEY).ok


def test_reopening_continues_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write(path, 3).close()
    _write(path, 2).close()
    assert [json.loads(line)["seq"] for line in _lines(path)] == [0, 1, 2, 3, 4, 5]
    assert verify(path, KEY).ok


def _tamper_edit_middle(path: Path) -> None:
    lines = _lines(path)
    lines[2] = lines[2].replace(b'"action":"block"', b'"action":"flag"')
    path.write_bytes(b"".join(lines))


def _tamper_delete_middle(path: Path) -> None:
    lines = _lines(path)
    del lines[2]
    path.write_bytes(b"".join(lines))


def _tamper_insert(path: Path) -> None:
    lines = _lines(path)
    lines.insert(3, lines[1])
    path.write_bytes(b"".join(lines))


def _tamper_reorder(path: Path) -> None:
    lines = _lines(path)
    lines[1], lines[2] = lines[2], lines[1]
    path.write_bytes(b"".join(lines))


def _tamper_delete_first(path: Path) -> None:
    path.write_bytes(b"".join(_lines(path)[1:]))


def _tamper_delete_first_record(path: Path) -> None:
    lines = _lines(path)
    path.write_bytes(b"".join([lines[0], *lines[2:]]))


@pytest.mark.parametrize(
    "tamper",
    [
        _tamper_edit_middle,
        _tamper_delete_middle,
        _tamper_insert,
        _tamper_reorder,
        _tamper_delete_first,
        _tamper_delete_first_record,
    ],
)
def test_tampering_is_detected_without_the_key(tmp_path: Path, tamper: object) -> None:
    path = tmp_path / "audit.jsonl"
    _write(path, 5).close()
    assert verify(path).ok
    tamper(path)  # type: ignore[operator]
    result = verify(path)
    assert not result.ok
    assert result.first_error is not None
    assert "audit.jsonl:" in result.first_error


def test_editing_the_last_record_needs_the_key_to_be_seen(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write(path, 4).close()
    lines = _lines(path)
    lines[-1] = lines[-1].replace(b'"client":"team-a"', b'"client":"team-b"')
    path.write_bytes(b"".join(lines))
    assert verify(path).ok  # a plain hash chain cannot see it
    result = verify(path, KEY)
    assert not result.ok
    assert "MAC" in (result.first_error or "")


def test_rotation_keeps_one_chain_across_files(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write(path, 30, max_bytes=2000, backups=20).close()
    files = rotated_files(path)
    assert len(files) >= 4
    assert all(f.stat().st_size <= 2000 for f in files)
    # The first record of each newer file carries the hash of the last line of the older one.
    for older, newer in itertools.pairwise(files):
        last = older.read_bytes().splitlines()[-1]
        assert json.loads(newer.read_bytes().splitlines()[0])["prev"] == hashlib.sha256(last).hexdigest()
    result = verify(path, KEY)
    assert result.ok
    assert result.records == 30 + len(files)
    assert result.last_seq == 30 + len(files) - 1
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_rotation_drops_the_oldest_and_still_verifies(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write(path, 40, max_bytes=1500, backups=2).close()
    assert len(rotated_files(path)) == 3
    result = verify(path, KEY)
    assert result.ok
    assert result.records < 40
    assert json.loads(_lines(path)[-1])["seq"] == result.last_seq


def test_removing_an_old_files_leading_records_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write(path, 40, max_bytes=1500, backups=2).close()
    oldest = rotated_files(path)[0]
    lines = _lines(oldest)
    oldest.write_bytes(b"".join([lines[0], *lines[2:]]))
    assert not verify(path).ok
    oldest.write_bytes(b"".join(lines[2:]))
    assert not verify(path).ok


def test_truncated_chain_across_rotation_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write(path, 30, max_bytes=2000, backups=20).close()
    newest_backup = path.with_name("audit.jsonl.1")
    newest_backup.write_bytes(b"".join(_lines(newest_backup)[:-1]))
    result = verify(path)
    assert not result.ok
    assert "audit.jsonl:1" in (result.first_error or "")


def test_a_missing_rotated_file_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write(path, 30, max_bytes=2000, backups=20).close()
    path.with_name("audit.jsonl.2").unlink()
    result = verify(path)
    assert not result.ok
    assert "missing" in (result.first_error or "")


def test_a_torn_last_line_is_closed_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write(path, 3).close()
    with path.open("ab") as f:
        f.write(b'{"seq":3,"kind":"gua')
    _write(path, 1).close()
    assert json.loads(_lines(path)[-1])["seq"] == 4  # after the header and 3 records
    result = verify(path)
    assert not result.ok
    assert "audit.jsonl:5" in (result.first_error or "")


def test_a_failing_sink_never_raises_and_is_counted(tmp_path: Path) -> None:
    failures: list[BaseException] = []
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    log = AuditLog(blocker / "audit.jsonl", KEY, on_failure=failures.append)
    assert log.healthy
    assert log.record("auth_failure", reason="expired") is False
    assert log.record_decision(_decision(0), client="c", policy_version="v") is False
    assert (log.failures, log.healthy, len(failures)) == (2, False, 2)
    assert isinstance(failures[0], OSError)


def test_disk_full_is_a_failure_not_an_exception() -> None:
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    log = AuditLog(Path("/dev/full"), KEY, on_failure=lambda exc: None)
    assert log.record("policy_reload", policy_version="v1") is False
    assert log.failures == 1
    assert not log.healthy
    log.close()


def test_sink_recovers_after_a_failure(tmp_path: Path) -> None:
    target = tmp_path / "later" / "audit.jsonl"
    (tmp_path / "later").write_text("blocks the directory")
    log = AuditLog(target, KEY)
    assert log.record("loop", rule="loop.repetition") is False
    (tmp_path / "later").unlink()
    assert log.record("loop", rule="loop.repetition") is True
    assert log.healthy
    assert log.failures == 1
    log.close()
    assert verify(target, KEY).ok


def test_a_raising_failure_hook_is_contained(tmp_path: Path) -> None:
    def hook(exc: BaseException) -> None:
        raise RuntimeError("metrics broke")

    (tmp_path / "f").write_text("")
    log = AuditLog(tmp_path / "f" / "audit.jsonl", KEY, on_failure=hook)
    assert log.record("loop") is False


def test_key_file_created_private_and_reused(tmp_path: Path) -> None:
    key_path = tmp_path / "audit.key"
    key = load_or_create_key(key_path)
    assert len(key) == 32
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert load_or_create_key(key_path) == key
    key_path.chmod(0o644)
    with pytest.raises(AuditKeyError, match="chmod 600"):
        load_or_create_key(key_path)
    short = tmp_path / "short.key"
    short.write_text("abcd\n")
    short.chmod(0o600)
    with pytest.raises(AuditKeyError, match="shorter"):
        load_or_create_key(short)
    with pytest.raises(AuditKeyError):
        AuditLog(tmp_path / "a.jsonl", b"short")


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="gateway")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code = args.func(args)
    return code, capsys.readouterr().out.strip()


def test_cli_verify_and_hmac(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    key_path = tmp_path / "audit.key"
    key = load_or_create_key(key_path)
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, key)
    log.record_decision(_decision(0), client="team-a", policy_version="v1")
    log.record_decision(_decision(1), client="team-a", policy_version="v1")
    log.close()

    code, out = _cli(["audit", "verify", str(path), "--key-file", str(key_path)], capsys)
    assert code == 0
    assert out.startswith("OK: 3 records")
    assert len(out.splitlines()) == 1

    monkeypatch.setattr("sys.stdin", io.StringIO(MATCHED + "\n"))
    code, out = _cli(["audit", "hmac", "--key-file", str(key_path)], capsys)
    assert code == 0
    assert out == json.loads(_lines(path)[1])["content_hmac"]

    _tamper_reorder(path)
    code, out = _cli(["audit", "verify", str(path)], capsys)
    assert code == 1
    assert out.startswith("FAILED")
    assert len(out.splitlines()) == 1

    code, _ = _cli(["audit", "verify", str(tmp_path / "missing.jsonl")], capsys)
    assert code == 1
