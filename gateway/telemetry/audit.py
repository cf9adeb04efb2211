"""Append-only, hash-chained JSON Lines audit trail, with content kept out of it.

Each line is one JSON object with ``seq`` (from 0, continuous across files), ``prev`` (SHA-256 hex
of the previous line's bytes; 64 zeros for seq 0) and ``mac`` (HMAC-SHA256 of the line without
``mac``, with a key derived from the audit key). Matched content appears only as
``content_hmac`` = HMAC-SHA256(audit key, content), so that an incident responder holding the key
can test whether a known text was involved, while the log holds no content.

Rotation by size renames ``audit.jsonl`` to ``audit.jsonl.1`` (``.1`` to ``.2``, ...); the chain
continues: the first record of the new file has ``prev`` = hash of the last line of the old one.

With several worker processes each worker writes a chain of its own, ``audit-<N>.jsonl`` beside the
configured ``audit.jsonl`` (``worker_path``): one writer per file keeps each chain linear.
``verify_chains`` checks every chain of a directory.

What ``verify`` detects: an edited, inserted, deleted or reordered record, and a break between
rotated files (without the key, a rewrite of the whole chain or of the last line goes unseen; with
it, both are caught). Removing records from the end of the newest file leaves a valid shorter
chain: compare ``last_seq`` with an external reference to detect that.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Final, Literal

from gateway.telemetry.scrub import Scrubber
from gateway.telemetry.spans import current_ids

if TYPE_CHECKING:
    from gateway.guardrails.pipeline import Decision

AuditKind = Literal["guardrail", "loop", "auth_failure", "rate_limited", "policy_reload"]
GENESIS: Final = "0" * 64
FILE_START: Final = "file_start"
KEY_BYTES: Final = 32
_MAC_CONTEXT: Final = b"menshen-audit-record-mac-v1"
_RESERVED: Final = frozenset({"seq", "time", "kind", "prev", "mac", "content_hmac"})
_log = logging.getLogger("menshen.audit")


class AuditKeyError(ValueError):
    """The audit key file is unusable (unreadable, too short, readable by others)."""


def load_or_create_key(path: Path) -> bytes:
    """Read the hex key at ``path``, creating a random one (mode 0600) when the file is missing.

    A key file that group or others may read is refused: the key is what keeps content HMACs
    from being brute-forced.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(KEY_BYTES) + "\n")
    mode = path.stat().st_mode
    if mode & 0o077:
        raise AuditKeyError(
            f"audit key file {path} is accessible by group/others (mode {mode & 0o777:o}); chmod 600"
        )
    try:
        key = bytes.fromhex(path.read_text().strip())
    except ValueError as exc:
        raise AuditKeyError(f"audit key file {path} does not hold a hex key") from exc
    if len(key) < KEY_BYTES:
        raise AuditKeyError(f"audit key in {path} is shorter than {KEY_BYTES} bytes")
    return key


def content_hmac(key: bytes, content: str) -> str:
    return hmac.new(key, content.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def _mac_key(key: bytes) -> bytes:
    # A separate key for record MACs, so a content HMAC can never be replayed as a record MAC.
    return hmac.new(key, _MAC_CONTEXT, hashlib.sha256).digest()


def _line_hash(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


def _encode(record: dict[str, object]) -> bytes:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str).encode()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def rotated_files(path: Path) -> list[Path]:
    """``path`` and its rotated predecessors (``path.1`` newest, ``path.N`` oldest), oldest first."""
    prefix = path.name + "."
    numbered: list[tuple[int, Path]] = []
    if path.parent.is_dir():
        for candidate in path.parent.iterdir():
            suffix = candidate.name[len(prefix) :]
            if candidate.name.startswith(prefix) and suffix.isdigit() and not suffix.startswith("0"):
                numbered.append((int(suffix), candidate))
    ordered = [p for _, p in sorted(numbered, reverse=True)]
    return [*ordered, path] if path.exists() else ordered


def worker_path(path: Path, worker: int) -> Path:
    """The trail of worker ``worker`` (from 1) beside ``path``: ``audit.jsonl`` -> ``audit-2.jsonl``."""
    return path.with_name(f"{path.stem}-{worker}{path.suffix}")


def chain_files(directory: Path) -> list[Path]:
    """The current file of every chain in ``directory``, sorted: ``*.jsonl`` files and any file whose
    first line is a chain header, each standing for its rotated ``FILE.N`` predecessors too."""
    heads: set[Path] = set()
    for candidate in directory.iterdir():
        if not candidate.is_file():
            continue
        stem, dot, suffix = candidate.name.rpartition(".")
        head = directory / stem if dot and suffix.isdigit() and not suffix.startswith("0") else candidate
        if head.name.endswith(".jsonl") or _starts_chain(candidate):
            heads.add(head)
    return sorted(heads)


def _starts_chain(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            first = f.readline(4096)
        record = json.loads(first)
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("kind") == FILE_START


class AuditLog:
    """Writes audit records; never raises into the caller. Thread-safe, one writer per file.

    Each ``record`` is written and flushed before it returns (no fsync): records are rare
    (decisions, refusals, reloads), so a short synchronous write keeps ordering simple.

    ``writable`` checks the file at most every ``probe_interval_s``: records may be too rare (or
    refused, under ``on_failure: block``) for a write to reveal a failure or a recovery.
    """

    def __init__(
        self,
        path: Path,
        hmac_key: bytes,
        max_bytes: int = 50 * 1024 * 1024,
        backups: int = 10,
        *,
        on_failure: Callable[[BaseException], None] | None = None,
        scrubber: Scrubber | None = None,
        probe_interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if len(hmac_key) < KEY_BYTES:
            raise AuditKeyError(f"audit key must be at least {KEY_BYTES} bytes")
        self.path = path
        self._key = hmac_key
        self._mac_key = _mac_key(hmac_key)
        self._max_bytes = max_bytes
        self._backups = max(1, backups)
        self._on_failure = on_failure
        self._scrubber = scrubber or Scrubber()
        self._lock = threading.Lock()
        self._file: IO[bytes] | None = None
        self._size = 0
        self._seq: int | None = None  # next seq; None until the chain head is read
        self._prev = GENESIS
        self.failures = 0
        self._healthy = True
        self.probe_interval_s = probe_interval_s
        self._clock = clock
        self._next_probe = float("-inf")

    @property
    def healthy(self) -> bool:
        """False after a failed write or check, until a write or a check (``writable``) succeeds."""
        return self._healthy

    def writable(self) -> bool:
        """``healthy``, checked against the disk at most every ``probe_interval_s``.

        A check (re)opens the file when none is open, and reopens it when the path no longer leads
        to the open file (deleted, or its directory replaced): records written there would be lost.
        It never writes a record, except the header of a new file. Between checks this is a clock
        read, cheap enough for every request. A full disk that still opens is seen at the next record.
        """
        now = self._clock()
        if now < self._next_probe or not self._lock.acquire(blocking=False):
            return self._healthy  # checked recently, or a write is under way and will tell
        try:
            self._next_probe = now + self.probe_interval_s
            if self._file is not None and not _same_file(self._file, self.path):
                self._drop_file()
            if self._file is None:
                self._open()
        except Exception as exc:  # noqa: BLE001 - a failing sink is reported, never raised
            if self._healthy:
                self._fail(exc)
            else:
                self._drop_file()
            return False
        finally:
            self._lock.release()
        if not self._healthy:
            self._healthy = True
            _log.warning("audit sink writable again after %d failed writes", self.failures)
        return True

    def record(self, kind: AuditKind, **fields: object) -> bool:
        """Append one record; False if it could not be written (counted, logged, never raised).

        Usual fields: client, rule, action, mode, policy_version, trace_id (default: the current
        span's). Fields under sensitive names (prompt, content, text, token...) are stored only
        as length and hash; content to correlate goes through ``record_decision`` as an HMAC.
        """
        return self._record(kind, None, fields)

    def record_decision(
        self,
        decision: Decision,
        *,
        kind: AuditKind = "guardrail",
        client: str | None,
        policy_version: str | None,
        trace_id: str | None = None,
    ) -> bool:
        """One guardrail/loop decision (shadow ones included): HMAC of ``matched``, never the text."""
        fields: dict[str, object] = {
            "client": client,
            "rule": decision.rule,
            "category": decision.category,
            "action": decision.action,
            "mode": decision.mode,
            "where": decision.where,
            "start": decision.start,
            "end": decision.end,
            "policy_version": policy_version,
        }
        if trace_id is not None:
            fields["trace_id"] = trace_id
        return self._record(kind, decision.matched or None, fields)

    def _record(self, kind: AuditKind, content: str | None, fields: dict[str, object]) -> bool:
        body: dict[str, object] = {"time": _now(), "kind": kind}
        for key, value in self._scrubber.scrub_mapping(fields).items():
            # Chain fields are the log's own; a caller's field of that name is kept beside them.
            body[f"x_{key}" if key in _RESERVED else key] = value
        if "trace_id" not in body:
            ids = current_ids()
            body["trace_id"] = format(ids[0], "032x") if ids is not None else None
        if content is not None:
            body["content_hmac"] = content_hmac(self._key, content)
        with self._lock:
            try:
                self._append(body)
            except Exception as exc:  # noqa: BLE001 - an audit failure must never fail the request
                self._fail(exc)
                return False
        self._healthy = True
        return True

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    # --- internals (lock held) ------------------------------------------------------------------

    def _append(self, body: dict[str, object]) -> None:
        if self._file is None:
            self._open()
        line = self._line(body)
        if self._size > 0 and self._size + len(line) + 1 > self._max_bytes:
            self._rotate()
            line = self._line(body)  # the new file's header took a seq
        self._write(line)

    def _line(self, body: dict[str, object]) -> bytes:
        assert self._seq is not None
        record = {"seq": self._seq, **body, "prev": self._prev}
        record["mac"] = hmac.new(self._mac_key, _encode(record), hashlib.sha256).hexdigest()
        return _encode(record)

    def _write(self, line: bytes) -> None:
        assert self._file is not None
        assert self._seq is not None
        self._file.write(line + b"\n")
        self._file.flush()
        self._size += len(line) + 1
        self._seq += 1
        self._prev = _line_hash(line)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._file = os.fdopen(fd, "ab")
        self._size = os.fstat(fd).st_size
        if self._seq is None:
            self._seq, self._prev = _read_head(self.path)
        if self._size == 0:
            # Each file opens with a header record: removing the first records of a file then
            # breaks the chain, instead of looking like an older file rotated away.
            self._write(self._line({"time": _now(), "kind": FILE_START}))
            return
        with self.path.open("rb") as f:
            f.seek(-1, os.SEEK_END)
            torn = f.read(1) != b"\n"
        if torn:
            # A crash cut the last line: end it, so verify reports it instead of merging lines.
            self._file.write(b"\n")
            self._size += 1

    def _drop_file(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
        self._seq = None  # re-read the head on the next attempt: the file may have changed

    def _rotate(self) -> None:
        assert self._file is not None
        self._file.close()
        self._file = None
        oldest = self.path.with_name(f"{self.path.name}.{self._backups}")
        oldest.unlink(missing_ok=True)
        for n in range(self._backups - 1, 0, -1):
            src = self.path.with_name(f"{self.path.name}.{n}")
            if src.exists():
                os.replace(src, self.path.with_name(f"{self.path.name}.{n + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self._open()

    def _fail(self, exc: BaseException) -> None:
        self.failures += 1
        self._healthy = False
        self._next_probe = self._clock() + self.probe_interval_s
        self._drop_file()
        _log.error("audit write failed: %s (failures=%d)", type(exc).__name__, self.failures)
        if self._on_failure is not None:
            try:
                self._on_failure(exc)
            except Exception:  # noqa: BLE001 - a broken hook must not break the request either
                _log.exception("audit on_failure hook raised")


def _same_file(file: IO[bytes], path: Path) -> bool:
    try:
        at_path = path.stat()
    except OSError:
        return False
    opened = os.fstat(file.fileno())
    return (opened.st_dev, opened.st_ino) == (at_path.st_dev, at_path.st_ino)


def _read_head(path: Path) -> tuple[int, str]:
    """Next seq and the hash of the last line, from the newest non-empty file of the chain."""
    for candidate in reversed(rotated_files(path)):
        lines = _tail_lines(candidate)
        if not lines:
            continue
        # A broken last line still anchors the chain (verify reports it); seq goes on from the
        # last record that parses.
        for line in reversed(lines):
            try:
                seq = json.loads(line)["seq"]
            except (ValueError, KeyError, TypeError):
                continue
            if isinstance(seq, int):
                return seq + 1, _line_hash(lines[-1])
        return 0, _line_hash(lines[-1])
    return 0, GENESIS


def _tail_lines(path: Path, limit: int = 1 << 16) -> list[bytes]:
    """The complete lines among the last ``limit`` bytes of ``path``."""
    if not path.is_file():  # a device such as /dev/full would read forever
        return []
    with path.open("rb") as f:
        size = f.seek(0, os.SEEK_END)
        start = max(0, size - limit)
        f.seek(start)
        lines = f.read().splitlines()
    if start > 0 and lines:
        lines = lines[1:]  # began mid-line
    return [line for line in lines if line]


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    records: int
    first_error: str | None = None
    last_seq: int | None = None
    files: tuple[str, ...] = ()


def verify(path: Path, key: bytes | None = None) -> VerifyResult:
    """Check the chain of ``path`` and its rotated predecessors; with ``key``, each record's MAC.

    The oldest file's first ``prev`` is accepted as the anchor when its records were rotated away
    (seq > 0); every later link is checked.
    """
    files = rotated_files(path)
    if not files:
        return VerifyResult(False, 0, f"{path}: no such file")
    numbers = [int(f.name.rsplit(".", 1)[1]) for f in files if f != path]
    if numbers and sorted(numbers) != list(range(1, len(numbers) + 1)):
        return VerifyResult(
            False,
            0,
            f"{path}: a rotated file is missing (numbers present: {sorted(numbers)})",
            None,
            _names(files),
        )
    mac_key = _mac_key(key) if key is not None else None
    prev: str | None = None
    expect_seq: int | None = None
    count = 0
    for index, file in enumerate(files):
        if not file.is_file():
            return VerifyResult(False, count, f"{file}: not a regular file", expect_seq, _names(files))
        with file.open("rb") as f:
            for lineno, raw in enumerate(f, 1):
                where = f"{file.name}:{lineno}"
                line = raw.rstrip(b"\n")
                error = _check_line(line, prev, expect_seq, mac_key)
                if error is None:
                    rec = json.loads(line)
                    if (lineno == 1) != (rec.get("kind") == FILE_START):
                        error = "file header missing or out of place (records removed from a file's start?)"
                    elif expect_seq is None and rec["seq"] != 0 and (index > 0 or file == path):
                        # Only the oldest rotated file may start mid-chain (older files were dropped).
                        error = f"chain starts at seq {rec['seq']}, not 0"
                if error is not None:
                    return VerifyResult(False, count, f"{where}: {error}", expect_seq, _names(files))
                expect_seq = rec["seq"] + 1
                prev = _line_hash(line)
                count += 1
    return VerifyResult(True, count, None, None if expect_seq is None else expect_seq - 1, _names(files))


def verify_chains(target: Path, key: bytes | None = None) -> list[tuple[Path, VerifyResult]]:
    """``verify`` of one file (and its rotated files), or of every chain in a directory."""
    if not target.is_dir():
        return [(target, verify(target, key))]
    heads = chain_files(target)
    if not heads:
        return [(target, VerifyResult(False, 0, f"{target}: no audit trail in this directory"))]
    return [(head, verify(head, key)) for head in heads]


def _check_line(line: bytes, prev: str | None, expect_seq: int | None, mac_key: bytes | None) -> str | None:
    try:
        rec = json.loads(line)
    except ValueError:
        return "not a JSON record (torn or edited line)"
    if (
        not isinstance(rec, dict)
        or not isinstance(rec.get("seq"), int)
        or not isinstance(rec.get("prev"), str)
    ):
        return "record without seq/prev"
    seq, rec_prev = rec["seq"], rec["prev"]
    if expect_seq is None:
        # First record seen: genesis, or the anchor left by rotated-away files.
        if seq == 0 and rec_prev != GENESIS:
            return "first record does not start the chain"
    else:
        if seq != expect_seq:
            return f"seq {seq}, expected {expect_seq} (record deleted, inserted or reordered)"
        if rec_prev != prev:
            return "prev hash does not match the previous record (edited, deleted or reordered)"
    if mac_key is not None:
        mac = rec.pop("mac", None)
        expected = hmac.new(mac_key, _encode(rec), hashlib.sha256).hexdigest()
        if not isinstance(mac, str) or not hmac.compare_digest(mac, expected):
            return "record MAC does not match (edited)"
    return None


def _names(files: Iterable[Path]) -> tuple[str, ...]:
    return tuple(str(f) for f in files)


__all__ = [
    "FILE_START",
    "GENESIS",
    "AuditKeyError",
    "AuditKind",
    "AuditLog",
    "VerifyResult",
    "chain_files",
    "content_hmac",
    "load_or_create_key",
    "rotated_files",
    "verify",
    "verify_chains",
    "worker_path",
]
