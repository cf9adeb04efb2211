"""HTTP framing the way no client library sends it, over a bare socket: content types, lying lengths,
chunked bodies, huge and many headers, odd methods and request targets. Same contract as the body fuzz."""

from __future__ import annotations

import json

import pytest
from hypothesis import example, given, seed, settings
from hypothesis import strategies as st

from tests.fuzz.checks import check_answer
from tests.fuzz.raw import exchange, request
from tests.fuzz.seed import FUZZ, fuzz_seed
from tests.fuzz.target import MODEL, Target

CHAT = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}).encode()
CHAT_PATH = "/v1/chat/completions"


def base(target: Target) -> list[tuple[str, str]]:
    return [("host", f"127.0.0.1:{target.port}"), ("connection", "close"), *target.auth().items()]


def answers_to(target: Target, raw: bytes, path: str = CHAT_PATH) -> list[int]:
    answers = exchange(target.port, raw)
    for answer in answers:
        check_answer(answer, path)
    return [answer.status for answer in answers]


def chunked(body: bytes, size: int = 4096) -> bytes:
    parts = [
        b"%x\r\n%s\r\n" % (len(body[i : i + size]), body[i : i + size]) for i in range(0, len(body), size)
    ]
    return b"".join(parts) + b"0\r\n\r\n"


@pytest.mark.parametrize(
    ("content_type", "status"),
    [(None, 415), ("text/plain", 415), ("application/jsonx", 415), ("application/json; charset=utf-8", 200)],
)
def test_content_type(target: Target, content_type: str | None, status: int) -> None:
    headers = base(target) + ([("content-type", content_type)] if content_type else [])
    headers.append(("content-length", str(len(CHAT))))
    assert answers_to(target, request("POST", CHAT_PATH, headers, CHAT)) == [status]


def test_content_length_longer_than_the_body(target: Target) -> None:
    headers = [*base(target), ("content-type", "application/json"), ("content-length", str(len(CHAT) + 50))]
    statuses = answers_to(target, request("POST", CHAT_PATH, headers, CHAT))
    assert statuses in ([], [408]), statuses  # the body deadline (2 s here) ends the wait


def test_content_length_shorter_than_the_body(target: Target) -> None:
    keep_alive = [h for h in base(target) if h[0] != "connection"]
    headers = [*keep_alive, ("content-type", "application/json"), ("content-length", str(len(CHAT) - 5))]
    smuggled = b"GET /v1/models HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n"
    statuses = answers_to(target, request("POST", CHAT_PATH, headers, CHAT) + smuggled)
    assert statuses and statuses[0] == 400, statuses  # the cut JSON is refused


def test_chunked_and_content_length_together(target: Target) -> None:
    headers = [
        *base(target),
        ("content-type", "application/json"),
        ("content-length", "3"),
        ("transfer-encoding", "chunked"),
    ]
    statuses = answers_to(target, request("POST", CHAT_PATH, headers, chunked(CHAT)))
    assert len(statuses) == 1 and statuses[0] in (200, 400), statuses


def test_oversized_chunked_body_is_413(target: Target) -> None:
    body = b'{"model":"' + b"x" * (2 * 1024 * 1024) + b'"}'
    headers = [*base(target), ("content-type", "application/json"), ("transfer-encoding", "chunked")]
    statuses = answers_to(target, request("POST", CHAT_PATH, headers, chunked(body, 65536)))
    assert statuses in ([413], []), statuses


@pytest.mark.parametrize("size", ["zz", "-1", "fffffffffffffffffff", "1;ext=" + "x" * 20_000])
def test_malformed_chunk_sizes(target: Target, size: str) -> None:
    headers = [*base(target), ("content-type", "application/json"), ("transfer-encoding", "chunked")]
    raw = request("POST", CHAT_PATH, headers, size.encode() + b"\r\n{}\r\n0\r\n\r\n")
    statuses = answers_to(target, raw)
    assert all(400 <= s < 500 for s in statuses), statuses


def test_one_huge_header_is_431(target: Target) -> None:
    headers = [*base(target), ("x-big", "a" * 40_000)]
    assert answers_to(target, request("GET", "/v1/models", headers), "/v1/models") == [431]


def test_many_headers_are_431(target: Target) -> None:
    headers = base(target) + [(f"x-h{i}", "v") for i in range(300)]
    assert answers_to(target, request("GET", "/v1/models", headers), "/v1/models") == [431]


@pytest.mark.parametrize(
    "line",
    [
        b"GET /v1/models HTTP/1.0\r\n\r\n",
        b"GET /v1/models HTTP/9.9\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"GET\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,  # a TLS ClientHello
        b"GET /v1/models HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n",
        b"GET /v1/models HTTP/1.1\r\n host: folded\r\n\r\n",
        b"GET /v1/models HTTP/1.1\r\nbad header\r\n\r\n",
        b"GET /v1/models HTTP/1.1\nhost: 127.0.0.1\n\n",
        b"\r\n\r\n\r\n",
    ],
)
def test_malformed_request_heads(target: Target, line: bytes) -> None:
    statuses = answers_to(target, line, "/v1/models")
    assert all(s < 500 for s in statuses), statuses


METHODS = ["GET", "POST", "FOO", "TRACE", "CONNECT", "get", "PROPFIND", "M" * 300]
SEGMENTS = ["v1", "models", "chat", "completions", "oauth", "jwks.json", ".well-known", "metrics", "healthz",
            "..", ".", "%2e%2e", "%2E%2e%2f", "%2F", "", "%00", "%ff", "~", "%u002e", ";x=1", "%252e"]  # fmt: skip


@settings(FUZZ, max_examples=150)
@seed(fuzz_seed())
@given(
    method=st.sampled_from(METHODS),
    segments=st.lists(st.sampled_from(SEGMENTS), min_size=0, max_size=6),
    form=st.sampled_from(["origin", "absolute", "absolute-foreign", "double-slash", "query"]),
)
@example(method="GET", segments=["", "v1", "models"], form="origin")  # //v1/models
@example(method="GET", segments=["v1", "..", "v1", "models"], form="origin")
@example(method="GET", segments=["v1", "%2e%2e", "v1", "models"], form="origin")
@example(method="GET", segments=["v1", "models"], form="absolute")
@example(method="GET", segments=["v1", "models"], form="absolute-foreign")
def test_methods_and_request_targets(target: Target, method: str, segments: list[str], form: str) -> None:
    path = "/" + "/".join(segments)
    if form == "absolute":
        path = f"http://127.0.0.1:{target.port}{path}"
    elif form == "absolute-foreign":
        path = f"http://evil.example{path}"
    elif form == "double-slash":
        path = "/" + path
    elif form == "query":
        path += "?a=%ff&b=%00&" + "c" * 2000
    answers_to(target, request(method, path, base(target), b""), path)


@pytest.mark.parametrize("length", [4_000, 15_000, 100_000])
def test_very_long_paths(target: Target, length: int) -> None:
    path = "/v1/" + "a" * length
    statuses = answers_to(target, request("GET", path, base(target)), path)
    assert statuses in ([404], [414], [431], [400]), statuses


def test_alive_after_the_framing_fuzz(target: Target) -> None:
    target.assert_alive()
