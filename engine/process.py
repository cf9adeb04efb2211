"""Process-group plumbing for the supervisor: launch shim, signals, exit polling."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Sequence

_EXIT_POLL_S = 0.1
# Sets PR_SET_PDEATHSIG (1) then execs the real command, keeping the pid. If the parent already
# died between fork and prctl, exit instead of running an orphan.
_PDEATHSIG_SHIM = (
    "import ctypes,os,signal,sys\n"
    "ctypes.CDLL(None).prctl(1,signal.SIGTERM,0,0,0)\n"
    "if os.getppid()!=int(sys.argv[1]): sys.exit(1)\n"
    "os.execvp(sys.argv[2],sys.argv[2:])\n"
)


def with_parent_death_signal(argv: Sequence[str]) -> list[str]:
    """``argv`` run so that the kernel sends it SIGTERM when this process dies (Linux only).

    The signal fires when the thread that forked the child ends, so the event loop's thread must
    outlive the child (it does: ``stop()`` runs on it).
    """
    if sys.platform != "linux":
        return list(argv)
    return [sys.executable, "-c", _PDEATHSIG_SHIM, str(os.getpid()), *argv]


def free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def signal_group(pgid: int, sig: signal.Signals) -> None:
    """Signal a whole process group; a group already gone is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def wait_exit(proc: asyncio.subprocess.Process, seconds: float) -> bool:
    """True once ``proc`` has exited, False after ``seconds``.

    Polls ``returncode``: ``Process.wait()`` also waits for the output pipe to close, which a
    surviving grandchild can hold open forever.
    """
    deadline = time.monotonic() + seconds
    while proc.returncode is None:
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(_EXIT_POLL_S)
    return True
