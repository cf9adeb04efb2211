"""The real vLLM CPU engine under the supervisor: answer, key, loopback, abort on disconnect.

One engine per session (``engine_supervisor``). The restart is tested through the gateway, in
``test_gateway_engine.py``, since it kills the session's engine.
"""

from __future__ import annotations

import json
import os
import socket
import time

import pytest

from engine import EngineSupervisor
from tests.support.e2e import ENGINE_START_TIMEOUT_S, engine_client, requests_running
from tests.support.processes import wait_until_sync

pytestmark = [pytest.mark.engine, pytest.mark.timeout(ENGINE_START_TIMEOUT_S + 300)]


def _chat(sup: EngineSupervisor, content: str, **extra: object) -> dict[str, object]:
    body: dict[str, object] = {
        "model": sup.served_model_name,
        "messages": [{"role": "user", "content": content}],
        "temperature": 0,
    }
    body.update(extra)
    return body


def test_greedy_answer_contains_paris(engine_supervisor: EngineSupervisor) -> None:
    with engine_client(engine_supervisor) as client:
        response = client.post(
            "/v1/chat/completions",
            json=_chat(engine_supervisor, "What is the capital of France?", max_tokens=30),
        )
    assert response.status_code == 200, response.text
    assert "Paris" in response.json()["choices"][0]["message"]["content"]


def test_streamed_text_and_usage(engine_supervisor: EngineSupervisor) -> None:
    body = _chat(
        engine_supervisor,
        "Count from one to twenty.",
        max_tokens=12,
        ignore_eos=True,
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage = "", None
    with (
        engine_client(engine_supervisor) as client,
        client.stream("POST", "/v1/chat/completions", json=body) as response,
    ):
        assert response.status_code == 200
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[len("data: ") :])
            for choice in chunk["choices"]:
                text += choice["delta"].get("content") or ""
            usage = chunk.get("usage") or usage
    assert text.strip()
    assert usage is not None
    assert usage["completion_tokens"] == 12
    assert usage["prompt_tokens"] > 0


def test_engine_refuses_calls_without_the_internal_key(engine_supervisor: EngineSupervisor) -> None:
    body = _chat(engine_supervisor, "hi", max_tokens=1)
    with engine_client(engine_supervisor, key=None) as client:
        assert client.post("/v1/chat/completions", json=body).status_code == 401
        assert client.get("/v1/models").status_code == 401
        assert client.get("/health").status_code == 200  # health stays open for the supervisor
    with engine_client(engine_supervisor, key="not-the-key") as client:
        assert client.post("/v1/chat/completions", json=body).status_code == 401
    with engine_client(engine_supervisor) as client:
        assert client.get("/v1/models").json()["data"][0]["id"] == "smollm2-135m-instruct"


_LOOPBACK = {"0100007F", "00000000000000000000000001000000"}  # 127.0.0.1 and ::1 as /proc/net shows them


def _group_listeners(pgid: int) -> dict[str, list[str]]:
    """LISTEN sockets of every process in the engine's process group: hex address -> hex ports."""
    inodes: set[str] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                if int(fh.read().rsplit(")", 1)[1].split()[2]) != pgid:
                    continue
            for fd in os.listdir(f"/proc/{entry}/fd"):
                target = os.readlink(f"/proc/{entry}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    listeners: dict[str, list[str]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as fh:
            for row in fh.read().splitlines()[1:]:
                fields = row.split()
                address, port = fields[1].split(":")
                if fields[3] == "0A" and fields[9] in inodes:
                    listeners.setdefault(address, []).append(port)
    return listeners


def test_engine_listens_on_loopback_only(engine_supervisor: EngineSupervisor) -> None:
    port = int(engine_supervisor.base_url.rsplit(":", 1)[1])
    assert engine_supervisor.base_url == f"http://127.0.0.1:{port}"
    assert engine_supervisor.pid is not None
    listeners = _group_listeners(engine_supervisor.pid)
    # The API port, and any internal port vLLM opens, listen on loopback only.
    assert f"{port:04X}" in listeners.get("0100007F", [])
    assert set(listeners) <= _LOOPBACK, listeners
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))  # no packet is sent; this only picks the outward address
        outward = probe.getsockname()[0]
    if outward.startswith("127."):
        pytest.skip("no non-loopback address to probe")
    with pytest.raises(ConnectionRefusedError), socket.create_connection((outward, port), timeout=2):
        pass


def test_closing_a_stream_aborts_the_request_within_2s(engine_supervisor: EngineSupervisor) -> None:
    body = _chat(
        engine_supervisor, "Write a very long story about a lighthouse.", max_tokens=1500, ignore_eos=True
    )
    body["stream"] = True
    with (
        engine_client(engine_supervisor) as client,
        client.stream("POST", "/v1/chat/completions", json=body) as response,
    ):
        assert response.status_code == 200
        lines = response.iter_lines()
        for _ in range(5):
            next(lines)
        assert requests_running(engine_supervisor) >= 1
    closed = time.monotonic()
    assert wait_until_sync(lambda: requests_running(engine_supervisor) == 0, 2.0)
    assert time.monotonic() - closed < 2.0
