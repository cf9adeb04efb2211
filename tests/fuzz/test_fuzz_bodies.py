"""Property-based fuzz of every route's input: JSON bodies built from the request schema then broken,
query strings, headers and OAuth forms. Every answer must keep the contract of ``checks.check_answer``.

Bounded in examples; the seed is printed by pytest (``FUZZ_SEED=N`` replays a run).
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import quote, urlencode

import httpx
from hypothesis import event, example, given, seed, settings
from hypothesis import strategies as st

from tests.fuzz.checks import Answer, check_answer, check_logs
from tests.fuzz.raw import exchange, request
from tests.fuzz.seed import FUZZ, fuzz_seed
from tests.fuzz.strategies import chat_bodies, completion_bodies, fuzzed_bodies
from tests.fuzz.target import Target

GET_PATHS = [
    "/v1/models",
    "/.well-known/openid-configuration",
    "/oauth/jwks.json",
    "/healthz",
    "/readyz",
    "/metrics",
]
HEADER_VALUE = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E) | st.sampled_from("\t\x80\xff"),
    max_size=60,
)


def send(http: httpx.Client, method: str, path: str, **kwargs: Any) -> Answer:
    response = http.request(method, path, **kwargs)
    return Answer(response.status_code, {k.lower(): v for k, v in response.headers.items()}, response.content)


def post_json(target: Target, http: httpx.Client, path: str, body: bytes) -> None:
    headers = {**target.auth(), "content-type": "application/json"}
    answer = send(http, "POST", path, content=body, headers=headers)
    event(f"status {answer.status}")  # --hypothesis-show-statistics shows what the bodies reached
    check_answer(answer, path)


@settings(FUZZ, max_examples=400)
@seed(fuzz_seed())
@given(body=fuzzed_bodies(chat_bodies()))
@example(body=b'{"model":"qwen3-8b","messages":[{"role":"user","content":"\\ud800"}]}')
@example(body=b'{"model":"qwen3-8b","messages":[{"role":"user","content":"hi"}],"max_tokens":NaN}')
@example(body=b'{"model":"qwen3-8b","model":1,"messages":[{"role":"user","content":"hi"}]}')
@example(body=b'{"model":"qwen3-8b","messages":[{"role":"user","content":"\xff\xfe"}]}')
@example(body=b"[" * 5000 + b"]" * 5000)
@example(
    body=b'{"model":"qwen3-8b","messages":[{"role":"user","content":"hi"}],"max_tokens":18446744073709551616}'
)
@example(body=b'{"model":"qwen3-8b","messages":[{"role":"user","content":[{"type":"image_url"}]}]}')
def test_chat_completions_bodies(target: Target, http: httpx.Client, body: bytes) -> None:
    post_json(target, http, "/v1/chat/completions", body)


@settings(FUZZ, max_examples=250)
@seed(fuzz_seed())
@given(body=fuzzed_bodies(completion_bodies()))
@example(body=b'{"model":"qwen3-8b","prompt":"hi","seed":1e999}')
@example(body=b'{"model":"qwen3-8b","prompt":"a\\u0000b","stop":["\\udfff"]}')
def test_completions_bodies(target: Target, http: httpx.Client, body: bytes) -> None:
    post_json(target, http, "/v1/completions", body)


def send_raw(
    target: Target, method: str, path: str, headers: list[tuple[str, str]], body: bytes = b""
) -> None:
    """Over a bare socket: header values an HTTP library refuses to send are the point here."""
    host = [("host", f"127.0.0.1:{target.port}"), ("connection", "close")]
    length = [("content-length", str(len(body)))] if body or method in ("POST", "PUT", "PATCH") else []
    answers = exchange(target.port, request(method, path, host + headers + length, body))
    assert answers, f"no answer to {method} {path}"
    for answer in answers:
        check_answer(answer, path, head=method == "HEAD")


@settings(FUZZ, max_examples=200)
@seed(fuzz_seed())
@given(
    path=st.sampled_from(GET_PATHS),
    query=st.dictionaries(st.text(max_size=8), st.text(max_size=20), max_size=3),
    accept=HEADER_VALUE,
    authorization=st.one_of(st.none(), HEADER_VALUE, st.just("Bearer "), st.just("Bearer a.b.c")),
    use_token=st.booleans(),
)
@example(path="/v1/models", query={}, accept="", authorization="Bearer ", use_token=False)
def test_get_routes(
    target: Target, path: str, query: dict[str, str], accept: str, authorization: str | None, use_token: bool
) -> None:
    headers = [("accept", accept)]
    if use_token:
        headers += list(target.auth().items())
    elif authorization is not None:
        headers.append(("authorization", authorization))
    target_path = path + ("?" + urlencode(query, errors="surrogatepass") if query else "")
    send_raw(target, "GET", target_path, headers)


@settings(FUZZ, max_examples=200)
@seed(fuzz_seed())
@given(
    path=st.sampled_from(["/v1/chat/completions", "/v1/completions", "/v1/models"]),
    method=st.sampled_from(["POST", "GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]),
    content_type=st.one_of(
        st.none(),
        st.sampled_from(
            ["application/json; charset=latin-1", "application/json;;", "text/plain", "multipart/form-data"]
        ),
        HEADER_VALUE,
    ),
    authorization=st.one_of(
        st.none(), HEADER_VALUE, st.sampled_from(["Bearer", "Basic Zm9vOmJhcg==", "Bearer x"])
    ),
    body=st.binary(max_size=200),
)
def test_methods_headers_and_raw_bytes(
    target: Target,
    path: str,
    method: str,
    content_type: str | None,
    authorization: str | None,
    body: bytes,
) -> None:
    headers = [("content-type", content_type)] if content_type is not None else []
    if authorization is not None:
        headers.append(("authorization", authorization))
    else:
        headers += list(target.auth().items())
    send_raw(target, method, path, headers, body)


FORM_KEYS = st.sampled_from(["grant_type", "scope", "client_id", "client_secret", "audience", "resource", ""])


@settings(FUZZ, max_examples=40)  # each attempt may verify an argon2 hash: slow by design
@seed(fuzz_seed())
@given(
    form=st.lists(st.tuples(FORM_KEYS | st.text(max_size=6), st.text(max_size=30)), max_size=5),
    grant=st.sampled_from(["client_credentials", "password", "", "client_credentials\x00"]),
    basic=st.one_of(st.none(), st.tuples(st.text(max_size=10), st.text(max_size=10))),
    content_type=st.sampled_from(
        ["application/x-www-form-urlencoded", "application/json", "multipart/form-data; boundary=x", ""]
    ),
)
@example(form=[("client_id", "fuzz"), ("client_secret", "\ud800")], grant="client_credentials", basic=None,
         content_type="application/x-www-form-urlencoded")  # fmt: skip
def test_oauth_token_forms(
    target: Target,
    http: httpx.Client,
    form: list[tuple[str, str]],
    grant: str,
    basic: tuple[str, str] | None,
    content_type: str,
) -> None:
    pairs = [("grant_type", grant), *form]
    body = "&".join(
        f"{quote(k, errors='surrogatepass')}={quote(v, errors='surrogatepass')}" for k, v in pairs
    )
    headers = {"content-type": content_type}
    if basic is not None:
        user_pass = f"{basic[0]}:{basic[1]}".encode("utf-8", "surrogatepass")
        headers["authorization"] = "Basic " + base64.b64encode(user_pass).decode()
    check_answer(send(http, "POST", "/oauth/token", content=body.encode(), headers=headers), "/oauth/token")


def test_alive_and_logs_clean_after_the_fuzz(target: Target) -> None:
    target.assert_alive()
    check_logs(target.logs.text())
