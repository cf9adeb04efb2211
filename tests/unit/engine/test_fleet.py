"""Every engine of a profile: configurations per engine, started, awaited and stopped together."""

from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path

import httpx
import pytest

from engine import EngineFleet, EngineStartError, SupervisorConfig, SupervisorConfigError, profile_configs
from tests.support.processes import FAKE_ENGINE, pid_alive, read_runs


def _template(tmp_path: Path, state_dir: Path, **env: str) -> SupervisorConfig:
    return SupervisorConfig(
        data_dir=tmp_path / "data",
        startup_timeout_s=10.0,
        health_interval_s=0.1,
        progress_interval_s=0.2,
        stop_grace_s=3.0,
        max_failed_starts=1,
        extra_env={"FAKE_STATE_DIR": str(state_dir), **env},
        command_prefix=(sys.executable, str(FAKE_ENGINE)),
    )


def _models(tmp_path: Path) -> dict[str, str | bool | None]:
    return {"model": str(tmp_path / "chat"), "embeddings:model": str(tmp_path / "emb")}


def test_one_config_per_engine_with_its_own_overrides(tmp_path: Path) -> None:
    chat, embeddings = profile_configs(
        "cpu-demo",
        {"max-model-len": 4096, "embeddings:model": "/m/minilm", "chat:model": "/m/smollm2"},
        SupervisorConfig(data_dir=tmp_path),
    )
    assert (chat.role, embeddings.role) == ("chat", "embeddings")
    assert dict(chat.overrides) == {"max-model-len": 4096, "model": "/m/smollm2"}
    assert dict(embeddings.overrides) == {"model": "/m/minilm"}
    assert chat.data_dir == embeddings.data_dir == tmp_path
    # The fleet logs one progress line for all of them.
    assert not chat.log_progress and not embeddings.log_progress


def test_every_problem_of_every_engine_is_reported_at_once() -> None:
    with pytest.raises(SupervisorConfigError) as info:
        profile_configs(
            "qwen3-8b",
            {"max-model-len": 40000, "embeddings:port": 1, "embeddings:max-model-len": "lots"},
        )
    assert info.value.problems == (
        "chat engine: max-model-len must be between 1 and 32768 for qwen3-8b, got 40000",
        "embeddings engine: port is set by the supervisor and cannot be overridden",
        "embeddings engine: max-model-len must be an integer, got 'lots'",
    )
    # A role the profile lacks does not hide the problems of the engines it has.
    with pytest.raises(SupervisorConfigError) as info:
        profile_configs("cpu-demo", {"guard:model": "/m", "embeddings:max-model-len": 512})
    assert info.value.problems == (
        "'guard:model': profile cpu-demo has no 'guard' engine; its engines: chat, embeddings",
        "embeddings engine: max-model-len must be between 1 and 256 for all-minilm-l6-v2, got 512",
    )
    with pytest.raises(SupervisorConfigError, match="unknown engine profile 'llama'"):
        profile_configs("llama")


def test_engines_sharing_a_gpu_must_leave_each_other_room() -> None:
    assert len(
        profile_configs(
            "qwen3-8b", {"gpu-memory-utilization": 0.85, "embeddings:gpu-memory-utilization": 0.15}
        )
    )
    with pytest.raises(SupervisorConfigError) as info:
        profile_configs("qwen3-8b", {"gpu-memory-utilization": 0.95})
    [problem] = info.value.problems
    assert (
        "share one GPU but their gpu-memory-utilization adds up to 1.05 (chat 0.95, embeddings 0.1)"
        in problem
    )
    # Removing the embeddings share falls back to vLLM's default of 0.9, which cannot fit either.
    with pytest.raises(SupervisorConfigError, match=r"adds up to 1\.7 "):
        profile_configs("qwen3-8b", {"embeddings:gpu-memory-utilization": None})


async def test_fleet_starts_every_engine_with_its_own_port_key_and_log_then_stops_them_all(
    tmp_path: Path, state_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="menshen.engine")
    template = _template(tmp_path, state_dir, FAKE_STARTUP_DELAY="0.6")
    fleet = EngineFleet(profile_configs("cpu-demo", _models(tmp_path), template))
    chat, embeddings = fleet.supervisors
    assert fleet.primary is chat is fleet.get("chat")
    assert fleet.get("embeddings") is embeddings
    assert fleet.get("guard") is None
    try:
        await fleet.start()
        await fleet.wait_ready(10)
        assert chat.up and embeddings.up
        assert chat.base_url != embeddings.base_url
        assert chat.api_key != embeddings.api_key
        assert fleet.api_keys == (chat.api_key, embeddings.api_key)
        async with httpx.AsyncClient(trust_env=False) as client:
            for sup, other in ((chat, embeddings), (embeddings, chat)):
                own = await client.get(
                    f"{sup.base_url}/v1/models", headers={"Authorization": f"Bearer {sup.api_key}"}
                )
                foreign = await client.get(
                    f"{sup.base_url}/v1/models", headers={"Authorization": f"Bearer {other.api_key}"}
                )
                assert (own.status_code, foreign.status_code) == (200, 401)
        pids = [chat.pid, embeddings.pid]
    finally:
        await fleet.stop()
    assert not any(pid_alive(pid) for pid in pids if pid)
    assert (chat.reason, embeddings.reason) == ("stopped", "stopped")
    runs = {run["argv"][run["argv"].index("--served-model-name") + 1]: run for run in read_runs(state_dir)}
    assert set(runs) == {"smollm2-135m-instruct", "all-minilm-l6-v2"}
    assert "--runner" in runs["all-minilm-l6-v2"]["argv"]
    assert "--tool-call-parser" in runs["smollm2-135m-instruct"]["argv"]
    logs = tmp_path / "data" / "logs"
    assert chat.log_path == logs / "engine-cpu-demo-chat.log"
    assert embeddings.log_path == logs / "engine-cpu-demo-embeddings.log"
    assert "all-minilm-l6-v2" in embeddings.log_path.read_text()
    messages = [r.getMessage() for r in caplog.records if r.name == "menshen.engine"]
    # One progress line for both while they load, naming each.
    progress = [m for m in messages if m.startswith("loading ")]
    assert progress, messages
    assert "smollm2-135m-instruct (chat), all-minilm-l6-v2 (embeddings)" in progress[0] or (
        "all-minilm-l6-v2 (embeddings), smollm2-135m-instruct (chat)" in progress[0]
    )
    assert not any(m.startswith("loading model") for m in messages)
    assert {m for m in messages if "engine stopped" in m} == {
        "chat engine stopped (last exit -15)",
        "embeddings engine stopped (last exit -15)",
    }


async def test_an_engine_that_cannot_start_fails_the_wait_and_the_others_still_stop(
    tmp_path: Path, state_dir: Path
) -> None:
    chat, embeddings = profile_configs("cpu-demo", _models(tmp_path), _template(tmp_path, state_dir))
    # Only the embeddings engine fails: its own environment says so.
    configs = (
        chat,
        dataclasses.replace(embeddings, extra_env={**embeddings.extra_env, "FAKE_FAIL_RUNS": "9"}),
    )
    fleet = EngineFleet(configs)
    try:
        await fleet.start()
        with pytest.raises(EngineStartError, match=r"engine-cpu-demo-embeddings\.log"):
            await fleet.wait_ready(10)
        chat_pid = fleet.primary.pid
    finally:
        await fleet.stop()
    assert chat_pid is not None
    assert not pid_alive(chat_pid)
    assert "failing on purpose" in (tmp_path / "data" / "logs" / "engine-cpu-demo-embeddings.log").read_text()
    assert "failing on purpose" not in (tmp_path / "data" / "logs" / "engine-cpu-demo-chat.log").read_text()
