"""Slow and abusive clients against the gateway as ``gateway serve`` runs it: real sockets, fake engine."""

from __future__ import annotations

import contextlib
import resource
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fakes.engine import FakeEngine
from tests.support.edge_server import connect, read_all, serve_edge, status_of
from tests.support.gateway import RunningGateway

BOUND_S = 2.0
CHAT = b'{"model":"qwen3-8b","messages":[{"role":"user","content":"hi"}]}'


@pytest.fixture(scope="module")
def engine() -> Iterator[FakeEngine]:
    with FakeEngine(models=("qwen3-8b",)) as fake:
        yield fake


@pytest.fixture
def gateway(engine: FakeEngine, tmp_path: Path) -> Iterator[RunningGateway]:
    with serve_edge(tmp_path, engine.url, header_timeout=BOUND_S, body_timeout=BOUND_S) as running:
        yield running


def _chat(gateway: RunningGateway) -> httpx.Response:
    return httpx.post(
        gateway.api + "/chat/completions",
        content=CHAT,
        headers={"content-type": "application/json"},
        timeout=10,
    )


def _trickle(socks: list[socket.socket], stop: threading.Event) -> None:
    while not stop.is_set():
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.send(b"x")
        stop.wait(0.5)


@pytest.mark.parametrize(
    "opening",
    [
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ",  # headers that never end
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100000\r\n\r\n",  # a body that never ends
    ],
    ids=["headers", "body"],
)
def test_normal_requests_are_served_beside_200_slow_connections_which_are_cut(
    gateway: RunningGateway, opening: bytes
) -> None:
    socks = [connect(gateway, timeout=BOUND_S * 10) for _ in range(200)]
    stop = threading.Event()
    for sock in socks:
        sock.sendall(opening)
    trickler = threading.Thread(target=_trickle, args=(socks, stop), daemon=True)
    trickler.start()
    try:
        started = time.monotonic()
        response = _chat(gateway)
        served_in = time.monotonic() - started
        assert response.status_code == 200
        assert served_in < 1.0, f"a normal request took {served_in:.2f} s beside 200 slow connections"
        # Each slow connection is answered 408 and closed at the bound, though it keeps sending.
        answers = [read_all(sock) for sock in socks]
        cut_after = time.monotonic() - started
    finally:
        stop.set()
        trickler.join()
        for sock in socks:
            sock.close()
    assert {status_of(answer) for answer in answers} == {408}
    assert all(b'"code":"request_timeout"' in answer for answer in answers)
    assert cut_after < BOUND_S * 5  # generous: the machine is shared


def _rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


@pytest.mark.parametrize("size", [100_000, 20 * 1024 * 1024])
def test_a_huge_header_gets_431_and_costs_no_memory(gateway: RunningGateway, size: int) -> None:
    before = _rss_kib()
    sock = connect(gateway)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
    try:
        for _ in range(0, size, 1024 * 1024):
            sock.sendall(b"a" * min(size, 1024 * 1024))
    except OSError:
        pass  # closed by the gateway while we were still sending: that is the point
    answer = read_all(sock)
    sock.close()
    # A reset can beat the answer when the server closes with our bytes unread; either way it is cut.
    assert status_of(answer) in (431, 0)
    if answer:
        assert b'"code":"header_fields_too_large"' in answer
    assert _rss_kib() - before < 10 * 1024, "the gateway (same process) kept the header in memory"
    assert _chat(gateway).status_code == 200


def test_too_many_header_fields_get_431(gateway: RunningGateway) -> None:
    headers = {f"x-h{i}": "1" for i in range(150)}
    response = httpx.get(gateway.url + "/healthz", headers=headers)
    assert response.status_code == 431
    assert response.json()["error"]["code"] == "header_fields_too_large"


def test_a_content_length_larger_than_the_body_gets_408_at_the_bound(gateway: RunningGateway) -> None:
    sock = connect(gateway, timeout=BOUND_S * 10)
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(CHAT) + 50).encode() + b"\r\n\r\n" + CHAT
    )
    answer = read_all(sock)  # returns because the gateway closes, long before the socket's timeout
    sock.close()
    assert status_of(answer) == 408
    assert b"connection: close" in answer.lower()
    assert b'"type":"timeout_error"' in answer


def test_connections_past_the_cap_get_503_with_retry_after(engine: FakeEngine, tmp_path: Path) -> None:
    with serve_edge(tmp_path, engine.url, max_connections=5) as gateway:
        held = [connect(gateway) for _ in range(5)]
        try:
            time.sleep(0.2)  # let the server accept them
            extra = connect(gateway)
            answer = read_all(extra)
            extra.close()
        finally:
            for sock in held:
                sock.close()
        assert status_of(answer) == 503
        assert b"retry-after: " in answer.lower()
        assert b'"code":"too_many_connections"' in answer


def test_a_malformed_request_gets_an_openai_shaped_400(gateway: RunningGateway) -> None:
    sock = connect(gateway)
    sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
    answer = read_all(sock)
    sock.close()
    assert status_of(answer) == 400
    assert b'"code":"invalid_http_request"' in answer
