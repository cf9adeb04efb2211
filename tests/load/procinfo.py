"""RSS and open file descriptors of a process and its descendants, from /proc (Linux)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Footprint:
    processes: int
    rss_bytes: int
    fds: int

    @property
    def rss_mib(self) -> float:
        return self.rss_bytes / 2**20


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (``--workers N`` runs N children under the parent)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue  # gone meanwhile
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def footprint(pids: list[int]) -> Footprint:
    """Summed RSS and fds of ``pids`` and their descendants; processes that ended are skipped."""
    rss = fds = count = 0
    for root in pids:
        for pid in descendants(root):
            try:
                rss += _rss_bytes(pid)
                fds += len(os.listdir(f"/proc/{pid}/fd"))
                count += 1
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue
    return Footprint(count, rss, fds)


__all__ = ["Footprint", "descendants", "footprint"]
