"""``gateway serve --workers 2`` as real processes: both workers serve, the node's metrics, audit chains,
policy reloads and stop signals; the refusal to start several workers without shared rate limits.

Workers name themselves in the ``x-menshen-worker`` response header (their pid).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest

from gateway.settings import ConfigError, load_settings
from gateway.up import ENGINE_COMMAND_ENV
from gateway.workers import WORKER_HEADER
from tests.fakes.engine import DEFAULT_MODEL, FakeEngine
from tests.support.gateway import DEFAULT_POLICIES, REPO
from tests.support.ports import free_port
from tests.support.processes import FAKE_ENGINE, pid_alive, wait_until_sync

START_TIMEOUT_S = 120.0  # two cold interpreters on a shared 2-core machine
REDIS_URL = "redis://127.0.0.1:6379/0"
TRACEBACK = re.compile(r"Traceback|KeyboardInterrupt|CancelledError")
CHAT = "/v1/chat/completions"


class Node:
    """``python -m gateway serve --workers 2 ARGS`` with its output in files."""

    def __init__(
        self, tmp: Path, upstream: str | None, args: Sequence[str], env: dict[str, str] | None = None
    ) -> None:
        self.port = free_port()
        self.data_dir = tmp / "data"
        self.policies = tmp / "policies"
        shutil.copytree(DEFAULT_POLICIES, self.policies)
        self.err = tmp / "stderr"
        base = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "PROMETHEUS_", "OTEL_"))}
        command = ["serve", "--upstream", upstream] if upstream else ["up"]
        argv = [
            sys.executable, "-m", "gateway", *command, "--workers", "2", "--auth", "none", "--port", str(self.port), "--data-dir", str(self.data_dir),
            "--policies", str(self.policies), *args,
        ]  # fmt: skip
        with self.err.open("wb") as err:
            self.proc = subprocess.Popen(argv, cwd=REPO, env={**base, **(env or {})}, stdout=err, stderr=err)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def request(self, method: str, path: str, **kwargs: object) -> httpx.Response | None:
        """One request on a connection of its own (the kernel picks the worker per connection)."""
        if self.proc.poll() is not None:
            raise AssertionError(f"gateway exited with {self.proc.returncode}:\n{self.stderr()}")
        try:
            with httpx.Client(trust_env=False, timeout=10) as client:
                return client.request(method, self.url + path, **kwargs)  # type: ignore[arg-type]
        except httpx.HTTPError:
            return None

    def chat(self) -> str:
        resp = self.request(
            "POST", CHAT, json={"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": "hi"}]}
        )
        assert resp is not None and resp.status_code == 200, resp and resp.text
        return resp.headers[WORKER_HEADER]

    def wait_for_both_workers(self) -> set[str]:
        seen: set[str] = set()

        def both() -> bool:
            resp = self.request("GET", "/healthz")
            if resp is not None and resp.status_code == 200:
                seen.add(resp.headers[WORKER_HEADER])
            return len(seen) == 2

        assert wait_until_sync(both, START_TIMEOUT_S, step=0.1), self.stderr()
        return seen

    def metric(self, name: str, **labels: str) -> float:
        resp = self.request("GET", "/metrics")
        assert resp is not None and resp.status_code == 200
        total = 0.0
        for line in resp.text.splitlines():
            if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def stop(self, sig: signal.Signals) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=60)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def engine() -> Iterator[FakeEngine]:
    with FakeEngine() as fe:
        yield fe


@pytest.fixture
def nodes() -> Iterator[list[Node]]:
    started: list[Node] = []
    yield started
    for node in started:
        node.kill()


def _children_of(pid: int, pids: set[str]) -> bool:
    def ppid(child: str) -> int:
        return int(Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[1])

    return all(ppid(child) == pid for child in pids)


def _reloads(audit: Path) -> list[str]:
    if not audit.exists():
        return []
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    return [r["policy_version"] for r in records if r["kind"] == "policy_reload" and r["result"] == "success"]


def _audit_verify(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    return subprocess.run(
        [sys.executable, "-m", "gateway", "audit", "verify", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_two_workers_share_the_port_metrics_audit_and_policy(
    tmp_path: Path, engine: FakeEngine, nodes: list[Node]
) -> None:
    prefix = f"menshen-test-{uuid.uuid4().hex[:8]}:"
    node = Node(tmp_path, engine.url, ["--redis-url", REDIS_URL, "--redis-key-prefix", prefix])
    nodes.append(node)
    workers = node.wait_for_both_workers()
    assert _children_of(node.proc.pid, workers)

    # Requests on fresh connections land on both workers; the node's /metrics counts each once,
    # whichever worker answers the scrape.
    served = [node.chat() for _ in range(20)]
    assert set(served) == workers
    for _ in range(4):
        assert node.metric("menshen_requests_total", route=CHAT, status="200") == len(served)

    # A policy edit reaches both workers (each records its reload in its own audit chain); so does SIGHUP.
    audits = [node.data_dir / "audit-1.jsonl", node.data_dir / "audit-2.jsonl"]
    limits = node.policies / "limits.yaml"
    limits.write_text(limits.read_text() + "\n# edited by the workers test\n")

    def reloaded(count: int) -> bool:
        return all(len(_reloads(audit)) >= count for audit in audits)

    assert wait_until_sync(lambda: reloaded(1), 30, step=0.2), node.stderr()
    versions = {_reloads(audit)[-1] for audit in audits}
    assert len(versions) == 1
    assert node.metric("menshen_policy_info", version=versions.pop()) == 1
    node.proc.send_signal(signal.SIGHUP)
    assert wait_until_sync(lambda: reloaded(2), 30, step=0.2), node.stderr()

    code = node.stop(signal.SIGTERM)
    assert code == 0, node.stderr()
    assert not TRACEBACK.search(node.stderr()), node.stderr()
    assert not any(pid_alive(int(pid)) for pid in workers)

    # Every worker's chain verifies: by default (the configured trail's directory), or named.
    for args in ([], [str(node.data_dir)], [str(audits[0])]):
        result = _audit_verify("--data-dir", str(node.data_dir), *args)
        assert result.returncode == 0, result.stdout + result.stderr
    named = _audit_verify("--data-dir", str(node.data_dir), str(node.data_dir)).stdout
    assert all(f"{audit}: OK" in named for audit in audits), named


def test_per_worker_limits_opt_in_serves_and_stops_on_ctrl_c(
    tmp_path: Path, engine: FakeEngine, nodes: list[Node]
) -> None:
    node = Node(tmp_path, engine.url, ["--per-worker-limits", "true"])
    nodes.append(node)
    workers = node.wait_for_both_workers()
    node.chat()

    code = node.stop(signal.SIGINT)
    assert code == 0, node.stderr()
    assert not TRACEBACK.search(node.stderr()), node.stderr()
    assert not any(pid_alive(int(pid)) for pid in workers)


def test_several_workers_without_redis_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={}, workers=2, auth="none", data_dir=tmp_path)
    (problem,) = caught.value.problems
    assert "--workers 2" in problem and "--redis-url" in problem and "--per-worker-limits" in problem

    assert load_settings(environ={}, workers=2, auth="none", data_dir=tmp_path, per_worker_limits=True)
    assert load_settings(environ={}, workers=2, auth="none", data_dir=tmp_path, redis_url=REDIS_URL)
    assert load_settings(environ={"GATEWAY_WORKERS": "1"}, auth="none", data_dir=tmp_path)

    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--auth", "none", "--data-dir", str(tmp_path)],
        cwd=REPO, env={**env, "GATEWAY_WORKERS": "3"}, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "--workers 3 (GATEWAY_WORKERS) needs --redis-url" in result.stderr
    assert "Traceback" not in result.stderr


def test_up_keeps_one_engine_under_two_workers(tmp_path: Path, nodes: list[Node]) -> None:
    state = tmp_path / "state"
    state.mkdir()
    node = Node(
        tmp_path,
        None,
        [
            "--profile",
            "cpu-demo",
            "--engine-arg",
            f"model={tmp_path / 'model'}",
            "--per-worker-limits",
            "true",
        ],
        {ENGINE_COMMAND_ENV: f"{sys.executable} {FAKE_ENGINE}", "FAKE_STATE_DIR": str(state)},
    )
    nodes.append(node)
    workers = node.wait_for_both_workers()
    assert wait_until_sync(lambda: "Menshen is ready at" in node.stderr(), START_TIMEOUT_S), node.stderr()
    assert wait_until_sync(lambda: _engine_up(node), 30, step=0.2), node.stderr()

    code = node.stop(signal.SIGINT)
    assert code == 0, node.stderr()
    assert not TRACEBACK.search(node.stderr()), node.stderr()
    assert not any(pid_alive(int(pid)) for pid in workers)
    assert "engine stopped" in node.stderr()


def _engine_up(node: Node) -> bool:
    resp = node.request("GET", "/readyz")
    return resp is not None and resp.status_code == 200
