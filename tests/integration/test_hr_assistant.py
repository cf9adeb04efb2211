"""The HR assistant example (``examples/hr_assistant``) through the real gateway with the built-in issuer.

The app registers as its own OAuth client (``gateway client add``), ingests the handbook and asks questions,
all through ``examples.hr_assistant.main``. Ranking is only meaningful with embeddings that reflect content,
so ``front`` puts a bag-of-words embedding function in front of the gateway: ``/v1/embeddings`` is answered
there, everything else (token endpoint, chat) is relayed to the gateway unchanged. The ``gateway`` variant
sends embeddings through Menshen's own ``/v1/embeddings`` to the fake engine.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gateway.cli import main as gateway_cli
from tests.fakes.engine import FakeEngine
from tests.fakes.script import Script
from tests.support.gateway import DEFAULT_POLICIES, RunningGateway, gateway_settings, run_gateway

CHAT = "smollm2-135m-instruct"
EMBED = "all-minilm-l6-v2"
REPO = Path(__file__).resolve().parents[2]
HANDBOOK = REPO / "examples" / "hr_assistant" / "handbook"
ANSWER = "After 12 years of service you get 10 days of annual leave [annual-leave]."
QUESTION = "How many days of annual leave do I get after 12 years of service?"
DIMENSIONS = 256
_STOP = frozenset(
    [
        "the",
        "and",
        "for",
        "with",
        "are",
        "may",
        "from",
        "that",
        "this",
        "what",
        "how",
        "many",
        "days",
        "after",
        "get",
        "does",
    ]
)


def bag_of_words(text: str) -> list[float]:
    """Word counts hashed into ``DIMENSIONS`` buckets: texts sharing words are close."""
    vector = [0.0] * DIMENSIONS
    for word in re.findall(r"[a-z]{3,}", text.lower()):
        if word not in _STOP:
            vector[int.from_bytes(hashlib.sha256(word.encode()).digest()[:4], "big") % DIMENSIONS] += 1.0
    return vector


class _Front(BaseHTTPRequestHandler):
    """``/v1/embeddings`` by bag of words; any other request relayed to the gateway as it streams."""

    upstream = ""
    protocol_version = "HTTP/1.0"  # the relayed body ends when the connection closes

    def do_GET(self) -> None:
        self._relay()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        if self.path == "/v1/embeddings":
            self._embeddings(json.loads(body))
        else:
            self._relay(body)

    def _embeddings(self, request: dict[str, Any]) -> None:
        texts = request["input"] if isinstance(request["input"], list) else [request["input"]]
        data = [
            {"object": "embedding", "index": i, "embedding": bag_of_words(t)} for i, t in enumerate(texts)
        ]
        tokens = sum(len(t.split()) for t in texts)
        payload = {
            "object": "list",
            "data": data,
            "model": request["model"],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        encoded = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(encoded)))
        self.end_headers()
        self.wfile.write(encoded)

    def _relay(self, body: bytes | None = None) -> None:
        skip = {"host", "content-length", "connection", "accept-encoding"}
        headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
        with (
            httpx.Client(timeout=30) as http,
            http.stream(self.command, self.upstream + self.path, headers=headers, content=body) as response,
        ):
            self.send_response(response.status_code)
            for key, value in response.headers.items():
                if key.lower() not in {
                    "content-length",
                    "transfer-encoding",
                    "connection",
                    "content-encoding",
                }:
                    self.send_header(key, value)
            self.end_headers()
            for piece in response.iter_raw():
                self.wfile.write(piece)
                self.wfile.flush()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def fake() -> Iterator[FakeEngine]:
    with FakeEngine(models=(CHAT,), embedding_models=(EMBED,), default_script=Script.of(ANSWER)) as engine:
        yield engine


HR_CLIENT: dict[str, Any] = {
    "tier": "standard",
    "models": [CHAT, "qwen3-8b", "qwen3-8b-awq", EMBED, "qwen3-embedding-*"],
    "scopes": ["llm.chat", "llm.embeddings"],
    "endpoints": ["chat", "embeddings"],
}


def _with_hr_client(clients: dict[str, Any]) -> None:
    """The hr-assistant entry of the documented policy edit, where the bundle lacks it."""
    clients["clients"].setdefault("hr-assistant", HR_CLIENT)


def _bundle(tmp_path: Path, limits: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """policies/default with the hr-assistant client; ``limits`` edits limits.yaml."""
    target = tmp_path / "policies"
    shutil.copytree(DEFAULT_POLICIES, target)
    for name, edit in (("clients.yaml", _with_hr_client), ("limits.yaml", limits)):
        if edit is None:
            continue
        path = target / name
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        edit(data)
        path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return target


@pytest.fixture
def gateway(fake: FakeEngine, tmp_path: Path, policies: Path) -> Iterator[RunningGateway]:
    settings = gateway_settings(tmp_path / "data", fake.url, auth="builtin", policies=policies)
    with run_gateway(settings) as running:
        yield running


def _serve_front(upstream: str) -> Iterator[str]:
    handler = type("Front", (_Front,), {"upstream": upstream})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def front(gateway: RunningGateway) -> Iterator[str]:
    yield from _serve_front(gateway.url)


@pytest.fixture(params=["front", "gateway"])
def menshen(request: pytest.FixtureRequest, gateway: RunningGateway) -> Iterator[str]:
    """The URL the app is given: the bag-of-words front, or the gateway itself."""
    if request.param == "gateway":
        yield gateway.url
    else:
        yield from _serve_front(gateway.url)


@pytest.fixture
def secret(gateway: RunningGateway, capsys: pytest.CaptureFixture[str]) -> str:
    """``gateway client add hr-assistant``: the secret it prints once."""
    scopes = ["--scope", "llm.chat", "--scope", "llm.embeddings"]
    code = gateway_cli(
        ["client", "add", "hr-assistant", *scopes, "--data-dir", str(gateway.settings.data_dir)]
    )
    assert code == 0
    out = capsys.readouterr().out
    return next(
        line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("client_secret:")
    )


class App:
    """``python -m examples.hr_assistant`` as a user runs it: its own process, secret in the environment."""

    def __init__(self, url: str, secret: str, db: Path) -> None:
        self.flags = ["--gateway", url, "--db", str(db)]
        self.env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "HR_CLIENT_ID": "hr-assistant",
            "HR_CLIENT_SECRET": secret,
        }

    def run(self, *args: str) -> tuple[int, str, str]:
        done = subprocess.run(
            [sys.executable, "-m", "examples.hr_assistant", *self.flags, *args],
            capture_output=True,
            text=True,
            encoding="utf-8",
            env=self.env,
            cwd=REPO,
            timeout=120,
            check=False,
        )
        return done.returncode, done.stdout, done.stderr

    def ingest(self, directory: Path = HANDBOOK) -> None:
        code, out, err = self.run("ingest", str(directory))
        assert code == 0, err
        assert out.startswith("indexed ")

    def ask_json(self, question: str) -> tuple[dict[str, Any], str]:
        code, out, err = self.run("ask", "--json", question)
        assert code == 0, err
        return json.loads(out), err


@pytest.fixture
def app(menshen: str, secret: str, tmp_path: Path) -> App:
    return App(menshen, secret, tmp_path / "index.sqlite3")


def _loop_script() -> Script:
    return Script.of("The leave policy says the same thing again and again. " * 60, rate=400)


# --- retrieval and answers ------------------------------------------------------------------------------


@pytest.mark.parametrize("menshen", ["front"], indirect=True)  # ranking needs embeddings that reflect content
def test_ingest_then_ask_ranks_the_answering_section_first(app: App, fake: FakeEngine) -> None:
    app.ingest()
    result, err = app.ask_json(QUESTION)
    assert set(result) == {"answer", "sources", "stopped"}
    assert result["answer"] == ANSWER
    assert result["stopped"] is None
    assert err == ""
    sources = result["sources"]
    ids = [s["id"] for s in sources]
    scores = [s["score"] for s in sources]
    assert ids[0] == "annual-leave"
    assert sources[0]["title"] == "Annual leave / 年休假"
    assert scores == sorted(scores, reverse=True)
    assert len(set(ids)) == len(ids), "one source per section"
    system = fake.last_request.json["messages"][0]["content"]
    assert "[annual-leave] Annual leave / 年休假" in system, "the best excerpt reaches the model, cited by id"
    assert fake.last_request.json["stream"] is True


def test_ask_streams_the_answer_then_the_sources(app: App) -> None:
    app.ingest()
    code, out, err = app.run("ask", QUESTION)
    assert code == 0, err
    answer, _, listing = out.partition("\n\nSources:\n")
    assert answer == ANSWER
    rows = [line.split(None, 2) for line in listing.splitlines()]
    assert rows
    assert all(float(score) >= -1.0 for score, _, _ in rows)
    assert {section for _, section, _ in rows} <= {p.stem for p in HANDBOOK.glob("*.md")}


def test_reingest_replaces_the_index(app: App, tmp_path: Path) -> None:
    app.ingest()
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(HANDBOOK / "travel.md", one / "travel.md")
    app.ingest(one)
    result, _ = app.ask_json(QUESTION)
    assert [s["id"] for s in result["sources"]] == ["travel"]


# --- Menshen's answers, handled as an app should -------------------------------------------------------


def test_content_filter_says_the_answer_was_withheld(app: App, fake: FakeEngine) -> None:
    fake.scripts["leak"] = Script.of("Our next launch is project nightjar, due in May.")
    app.ingest()
    result, err = app.ask_json("What is planned for May? [[script:leak]]")
    assert result["stopped"] == "content_filter"
    assert "nightjar" not in result["answer"]
    assert "withheld by Menshen's content policy" in err


def test_loop_cut_says_the_answer_repeated_itself(app: App, fake: FakeEngine) -> None:
    fake.scripts["loop"] = _loop_script()
    app.ingest()
    code, out, err = app.run("ask", "Tell me about leave [[script:loop]]")
    assert code == 0, err
    assert "cut because it kept repeating itself" in err
    assert "\n\nSources:\n" in out
    assert len(out) < len(_loop_script().content)


def test_wrong_secret_is_one_line_and_exit_1(menshen: str, tmp_path: Path) -> None:
    code, out, err = App(menshen, "not-the-secret", tmp_path / "db").run("ingest", str(HANDBOOK))
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("hr-assistant: the token endpoint ")
    assert "invalid_client" in err


def test_ask_before_ingest_is_one_line_and_exit_1(app: App) -> None:
    code, _, err = app.run("ask", QUESTION)
    assert code == 1
    assert err.startswith("hr-assistant: no index at ")
    assert err.count("\n") == 1


@pytest.fixture
def policies(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    limit = getattr(request, "param", None)
    if limit is None:
        return _bundle(tmp_path)

    def tight(data: dict[str, Any]) -> None:
        data["tiers"]["standard"]["requests"] = limit

    return _bundle(tmp_path, tight)


@pytest.mark.parametrize("policies", ["1/5second"], indirect=True)
def test_429_waits_for_retry_after_then_answers(app: App) -> None:
    app.ingest()
    first, first_err = app.ask_json(QUESTION)
    second, second_err = app.ask_json(QUESTION)
    assert first["answer"] == second["answer"] == ANSWER
    waits = [
        line for line in (first_err + second_err).splitlines() if "rate limited by Menshen (429)" in line
    ]
    assert waits, "one of the asks found the limit reached and waited"
    seconds = float(re.search(r"waiting ([0-9.]+) s", waits[0]).group(1))  # type: ignore[union-attr]
    assert 0 < seconds <= 5


@pytest.mark.parametrize("policies", ["1/minute"], indirect=True)
def test_429_beyond_the_retries_is_one_line_and_exit_1(app: App) -> None:
    app.ingest()
    # Uses up the one request a minute (through the gateway, ingest's embeddings already did).
    app.run("--max-retries", "0", "ask", "--json", QUESTION)
    code, out, err = app.run("--max-retries", "0", "ask", "--json", QUESTION)
    assert code == 1
    assert out == ""
    assert err.splitlines()[-1].startswith("hr-assistant: Menshen is still rate limiting this app: 429 ")
