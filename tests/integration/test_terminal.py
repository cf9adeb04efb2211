"""``gateway up`` and ``gateway serve`` as a person runs them: real processes, stopped by SIGINT/SIGTERM.

``gateway up`` runs the engine stand-in of the supervisor tests (``MENSHEN_ENGINE_COMMAND``) for each
engine of the ``cpu-demo`` profile (chat and embeddings); ``gateway serve`` runs in front of the fake
engine. Either must exit 0 without a traceback and leave no engine behind.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.up import ENGINE_COMMAND_ENV
from tests.fakes.engine import FakeEngine
from tests.support.gateway import REPO
from tests.support.ports import free_port
from tests.support.processes import FAKE_ENGINE, pid_alive, read_runs, wait_until_sync

START_TIMEOUT_S = 90.0  # cold imports on a shared 2-core machine
TRACEBACK = re.compile(r"Traceback|KeyboardInterrupt|CancelledError")


class Gateway:
    """``python -m gateway ARGS`` with its stdout and stderr in files (a pipe could fill and block it)."""

    def __init__(self, tmp: Path, args: Sequence[str], env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.data_dir = tmp / "data"
        self.out, self.err = tmp / "stdout", tmp / "stderr"
        base = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "FAKE_"))}
        argv = [
            sys.executable,
            "-m",
            "gateway",
            *args,
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
        ]
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.proc = subprocess.Popen(argv, cwd=REPO, env={**base, **(env or {})}, stdout=out, stderr=err)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> httpx.Response | None:
        if self.proc.poll() is not None:
            raise AssertionError(f"gateway exited with {self.proc.returncode}:\n{self.stderr()}")
        try:
            return httpx.get(self.url + path, timeout=5, trust_env=False)
        except httpx.HTTPError:
            return None

    def engine_pid(self) -> int | None:
        """The engine's pid from ``/readyz``, once the engine is up."""
        resp = self.get("/readyz")
        if resp is None or resp.status_code != 200:
            return None
        pid: Any = resp.json()["engine"].get("pid")
        return int(pid) if pid else None

    def stop(self, *signals: signal.Signals, between: float = 0.0) -> int:
        for i, sig in enumerate(signals):
            if i:
                time.sleep(between)
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=60)

    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def gateways() -> Iterator[list[Gateway]]:
    started: list[Gateway] = []
    yield started
    for gw in started:
        gw.kill()


def _up(tmp: Path, state: Path, *extra: str, env: dict[str, str] | None = None) -> Gateway:
    state.mkdir(exist_ok=True)
    return Gateway(
        tmp,
        [
            "up",
            "--profile",
            "cpu-demo",
            "--engine-arg",
            f"model={tmp / 'model'}",
            "--engine-arg",
            f"embeddings:model={tmp / 'embedding-model'}",
            *extra,
        ],
        {
            ENGINE_COMMAND_ENV: f"{sys.executable} {FAKE_ENGINE}",
            "FAKE_STATE_DIR": str(state),
            **(env or {}),
        },
    )


def _assert_quiet_exit(gw: Gateway, code: int) -> None:
    assert code == 0, gw.stderr()
    assert not TRACEBACK.search(gw.stderr()), gw.stderr()
    assert not TRACEBACK.search(gw.stdout()), gw.stdout()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_up_stops_gateway_and_engine_on_a_signal(
    tmp_path: Path, gateways: list[Gateway], sig: signal.Signals
) -> None:
    state = tmp_path / "state"
    gw = _up(tmp_path, state)
    gateways.append(gw)
    assert wait_until_sync(lambda: gw.engine_pid() is not None, START_TIMEOUT_S, step=0.2), gw.stderr()
    pid = gw.engine_pid()
    assert pid is not None and pid_alive(pid)
    # The banner is printed once every engine is ready; wait for it before interrupting.
    assert wait_until_sync(lambda: "Menshen is ready at" in gw.stdout(), 10), gw.stdout()
    assert "models: 'smollm2-135m-instruct' (chat), 'all-minilm-l6-v2' (embeddings)" in gw.stdout()
    assert f"curl -s {gw.url}/v1/embeddings" in gw.stdout()
    runs = {run["argv"][run["argv"].index("--served-model-name") + 1]: run for run in read_runs(state)}
    assert set(runs) == {"smollm2-135m-instruct", "all-minilm-l6-v2"}
    pids = [run["pid"] for run in runs.values()]
    assert pid in pids
    assert all(pid_alive(p) for p in pids)
    ports = {run["argv"][run["argv"].index("--port") + 1] for run in runs.values()}
    assert len(ports) == 2

    _assert_quiet_exit(gw, gw.stop(sig))
    assert not any(pid_alive(p) for p in pids)
    assert "chat engine stopped" in gw.stderr()
    assert "embeddings engine stopped" in gw.stderr()
    # Each engine's own output went to its log file, not to the terminal.
    for role in ("chat", "embeddings"):
        assert "[fake] serving on" in (gw.data_dir / "logs" / f"engine-cpu-demo-{role}.log").read_text()
    assert "[fake]" not in gw.stderr()


def test_up_second_interrupt_during_shutdown_still_stops_the_engines(
    tmp_path: Path, gateways: list[Gateway]
) -> None:
    # Engines that ignore SIGTERM keep the shutdown busy for the whole grace period (then SIGKILL).
    state = tmp_path / "state"
    gw = _up(tmp_path, state, env={"FAKE_IGNORE_TERM": "1"})
    gateways.append(gw)
    assert wait_until_sync(lambda: gw.engine_pid() is not None, START_TIMEOUT_S, step=0.2), gw.stderr()
    assert wait_until_sync(lambda: len(read_runs(state)) == 2, 10)
    pids = [run["pid"] for run in read_runs(state)]
    gw.proc.send_signal(signal.SIGINT)
    # The server is done and the supervisors are waiting for the engines: interrupt again.
    assert wait_until_sync(lambda: "Finished server process" in gw.stderr(), 30), gw.stderr()
    _assert_quiet_exit(gw, gw.stop(signal.SIGINT))
    assert not any(pid_alive(p) for p in pids)
    assert gw.stderr().count("ignored SIGTERM") == 2


@pytest.mark.parametrize(
    ("failing", "role"), [("smollm2-135m-instruct", "chat"), ("all-minilm-l6-v2", "embeddings")]
)
def test_up_engine_that_cannot_start_shows_the_end_of_its_log(
    tmp_path: Path, gateways: list[Gateway], failing: str, role: str
) -> None:
    state = tmp_path / "state"
    gw = _up(tmp_path, state, "--log-json", "false", env={"FAKE_FAIL_SERVED": failing})
    gateways.append(gw)
    code = gw.proc.wait(timeout=START_TIMEOUT_S)
    err = gw.stderr()
    log_path = gw.data_dir / "logs" / f"engine-cpu-demo-{role}.log"
    assert code == 1, err
    assert not TRACEBACK.search(err), err
    assert f"last lines of {log_path}" in err
    # Human-readable form: the tail arrives as lines of its own, the engine's exit message among them.
    lines = err.splitlines()
    assert any(
        re.fullmatch(r"  ERROR 01-01 00:00:00 \[fake\] run \d failing on purpose", line) for line in lines
    )
    assert any(
        re.fullmatch(r"  INFO 01-01 00:00:00 \[fake\] fake engine run \d starting", line) for line in lines
    )
    assert "Menshen is ready" not in gw.stdout()
    assert "failing on purpose" in log_path.read_text()
    # The engine that did start is stopped with the rest.
    assert not any(pid_alive(run["pid"]) for run in read_runs(state))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_serve_stops_quietly_on_a_signal(
    tmp_path: Path, gateways: list[Gateway], sig: signal.Signals
) -> None:
    with FakeEngine() as engine:
        gw = Gateway(tmp_path, ["serve", "--upstream", engine.url, "--auth", "none"])
        gateways.append(gw)
        assert wait_until_sync(
            lambda: (r := gw.get("/healthz")) is not None and r.status_code == 200, START_TIMEOUT_S
        )
        _assert_quiet_exit(gw, gw.stop(sig))
    assert "Finished server process" in gw.stderr()
    assert "color_message" not in gw.stderr()
