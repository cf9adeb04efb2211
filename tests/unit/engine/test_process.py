"""Process plumbing: free ports, group signals, the parent-death shim."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys

from engine.process import free_port, signal_group, with_parent_death_signal
from tests.support.processes import pid_alive, wait_until_sync


def test_free_port_is_bindable_on_loopback() -> None:
    port = free_port("127.0.0.1")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_signal_group_reaches_grandchildren_and_tolerates_a_gone_group() -> None:
    code = "import subprocess,sys,time; p=subprocess.Popen([sys.executable,'-c','import time; time.sleep(60)']); print(p.pid, flush=True); time.sleep(60)"
    with subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True
    ) as leader:
        assert leader.stdout is not None
        grandchild = int(leader.stdout.readline())
        signal_group(leader.pid, signal.SIGTERM)
        assert leader.wait(5) == -signal.SIGTERM
        assert wait_until_sync(lambda: not pid_alive(grandchild), 5)
    signal_group(leader.pid, signal.SIGTERM)  # no such group any more: no error


def test_parent_death_shim_runs_the_command_in_place() -> None:
    argv = with_parent_death_signal([sys.executable, "-c", "import os; print(os.getpid())"])
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        assert int(proc.stdout.read()) == proc.pid  # exec'd: the pid the supervisor sees is the engine's
        assert proc.wait(5) == 0
