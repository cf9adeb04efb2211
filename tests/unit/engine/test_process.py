"""Process plumbing: vLLM log levels, free ports, group signals."""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import sys

import pytest

from engine.process import free_port, level_of, signal_group, with_parent_death_signal
from tests.unit.engine.support import pid_alive, wait_until_sync


@pytest.mark.parametrize(
    ("line", "previous", "expected"),
    [
        (
            "(APIServer pid=1) WARNING 11-28 22:59:17 [system_utils.py:255] Found ulimit",
            logging.INFO,
            logging.WARNING,
        ),
        (
            "(EngineCore pid=2) ERROR 11-28 23:01:11 [core.py:1] EngineCore failed",
            logging.INFO,
            logging.ERROR,
        ),
        ("INFO:     Shutting down", logging.ERROR, logging.INFO),
        ('  File "/x/async_llm.py", line 849, in output_handler', logging.ERROR, logging.ERROR),
        ("x" * 90 + " ERROR late in a long line", logging.INFO, logging.INFO),
    ],
)
def test_level_of_vllm_lines(line: str, previous: int, expected: int) -> None:
    assert level_of(line, previous) == expected


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
