from __future__ import annotations

import io
import json
import logging
import re

from opentelemetry.sdk.trace import TracerProvider

from gateway.telemetry import Scrubber, configure_logging, get_logger, log_access, redact
from tests.support.logcapture import saved_logging
from tests.support.telemetry import Captured

JWT = (
    "eyJhbGciOiJFUzI1NiIsImtpZCI6ImsxIn0."
    "eyJzdWIiOiJ0ZWFtLWEiLCJzY29wZSI6ImNoYXQifQ."
    "MEUCIQDx3k2_signature_part-abc"
)
OPAQUE = "mk_live_9f8e7d6c5b4a39281706"
PROMPT = "Summarise the merger plan of Project Nightingale"
OUTPUT = "The Nightingale merger closes on the fifth"
CLIENT_SECRET = "s3cr3t-client-secret-value"


def test_redact_format() -> None:
    r = redact("hello")
    assert r == "[REDACTED LENGTH=5 HASH=sha256:2cf24dba5fb0]"
    assert redact("hello") == r
    assert redact("hellO") != r


def test_scrub_text_patterns() -> None:
    s = Scrubber(literals=[CLIENT_SECRET])
    cases = [
        f"Authorization: Bearer {OPAQUE}",
        f"token was {JWT} in the header",
        f"GET /cb?code=1&access_token={OPAQUE}&state=x",
        f'{{"client_secret": "{OPAQUE}"}}',
        f"secret={OPAQUE}",
        f"engine key {CLIENT_SECRET} leaked",
    ]
    for text in cases:
        out = s.scrub_text(text)
        assert OPAQUE not in out
        assert JWT[:20] not in out
        assert CLIENT_SECRET not in out
        assert "[REDACTED LENGTH=" in out
    assert s.scrub_text("input_tokens=12 max_tokens=5") == "input_tokens=12 max_tokens=5"


def test_sensitive_keys_are_redacted_whatever_the_value() -> None:
    s = Scrubber(extra_keys=["X-Internal"])
    out = s.scrub_mapping(
        {
            "messages": [{"role": "user", "content": PROMPT}],
            "headers": {"Authorization": "Basic dXNlcjpwYXNz", "x-internal": "v", "accept": "json"},
            "engine_api_key": 12345,
            "output": OUTPUT,
            "input_tokens": 12,
            "where": "input",
            "stream": True,
        }
    )
    text = repr(out)
    assert PROMPT not in text
    assert OUTPUT not in text
    assert "dXNlcjpwYXNz" not in text
    assert str(out["engine_api_key"]).startswith("[REDACTED")
    assert out["headers"]["accept"] == "json"  # type: ignore[index]
    assert str(out["headers"]["x-internal"]).startswith("[REDACTED")  # type: ignore[index]
    assert (out["input_tokens"], out["where"], out["stream"]) == (12, "input", True)


def test_logs_are_json_lines_without_secrets(captured_logs: Captured) -> None:
    log = get_logger("menshen.test")
    log.info("auth header seen", authorization=f"Bearer {JWT}", client_id="team-a")
    log.info(f"upstream said Bearer {OPAQUE}", prompt=PROMPT)
    log.warning("request", messages=[{"role": "user", "content": PROMPT}], output=OUTPUT)
    log.info("oauth", client_secret=CLIENT_SECRET, password="hunter2hunter2")
    logging.getLogger("uvicorn.error").error("bad token %s from %s", JWT, "10.0.0.1")
    logging.getLogger("httpx").warning("HTTP Request: POST http://x/?access_token=%s", OPAQUE)
    logging.getLogger("litestar").info("extra fields", extra={"content": OUTPUT, "size": 3})
    try:
        raise ValueError(f"upstream rejected Bearer {OPAQUE}")
    except ValueError:
        log.exception("engine call failed")
    text = captured_logs.text()
    for secret in (JWT, JWT[:30], OPAQUE, PROMPT, OUTPUT, CLIENT_SECRET, "hunter2hunter2", "Nightingale"):
        assert secret not in text, secret
    records = captured_logs.records()
    assert len(records) == 8
    assert records[0]["client_id"] == "team-a"
    assert records[0]["level"] == "info"
    assert records[0]["logger"] == "menshen.test"
    assert str(records[0]["time"]).endswith("Z")
    assert records[4]["logger"] == "uvicorn.error"
    assert records[6]["size"] == 3
    assert "Traceback" in str(records[7]["exception"])


def test_trace_and_span_ids_in_logs(captured_logs: Captured) -> None:
    tracer = TracerProvider().get_tracer("t")
    with tracer.start_as_current_span("req") as span:
        get_logger("menshen.test").info("inside")
        logging.getLogger("uvicorn.error").info("stdlib inside")
    get_logger("menshen.test").info("outside")
    inside, stdlib_inside, outside = captured_logs.records()
    ctx = span.get_span_context()
    for rec in (inside, stdlib_inside):
        assert rec["trace_id"] == format(ctx.trace_id, "032x")
        assert rec["span_id"] == format(ctx.span_id, "016x")
    assert "trace_id" not in outside


def test_access_log_line(captured_logs: Captured) -> None:
    log_access(
        method="POST",
        path=f"/v1/chat/completions?access_token={OPAQUE}",
        status=200,
        duration_ms=123.4567,
        client_id="team-a",
        bytes_sent=2048,
        finish_reason="stop",
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
    )
    (rec,) = captured_logs.records()
    assert rec["event"] == "access"
    assert rec["logger"] == "menshen.access"
    assert rec["path"] == "/v1/chat/completions"
    assert (rec["method"], rec["status"], rec["duration_ms"]) == ("POST", 200, 123.457)
    assert (rec["client_id"], rec["bytes"], rec["finish_reason"]) == ("team-a", 2048, "stop")
    assert rec["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert OPAQUE not in captured_logs.text()


def test_level_filters(captured_logs: Captured) -> None:
    configure_logging("INFO", stream=captured_logs.stream)
    get_logger("menshen.test").debug("hidden")
    logging.getLogger("httpx").info("HTTP Request: GET http://engine/health")
    logging.getLogger("httpx").warning("kept")
    get_logger("menshen.test").info("shown")
    assert [r["event"] for r in captured_logs.records()] == ["kept", "shown"]


class _Terminal(io.StringIO):
    """A buffer that says it is a terminal, as stderr does when a person runs the command."""

    def isatty(self) -> bool:
        return True


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _log_sample() -> None:
    get_logger("menshen.engine").info(
        "engine ready", url="http://127.0.0.1:8001", authorization=f"Bearer {JWT}"
    )
    # uvicorn passes a coloured copy of its message as the `color_message` extra.
    logging.getLogger("uvicorn.error").info(
        "Uvicorn running on %s", "http://127.0.0.1:8080", extra={"color_message": "\x1b[1mUvicorn\x1b[0m"}
    )
    logging.getLogger("uvicorn.error").warning("leaked %s", CLIENT_SECRET)


def _render(stream: io.StringIO, json_flag: bool | None) -> str:
    with saved_logging():
        configure_logging("INFO", json=json_flag, stream=stream, scrubber=Scrubber(literals=[CLIENT_SECRET]))
        _log_sample()
    return stream.getvalue()


def test_terminal_gets_readable_coloured_lines() -> None:
    text = _render(_Terminal(), None)
    plain = _ANSI.sub("", text)
    lines = plain.splitlines()
    assert len(lines) == 3
    assert _ANSI.search(text)  # colours on a terminal
    assert not any(line.startswith("{") for line in lines)
    assert re.match(r"\d\d:\d\d:\d\d \[info\s*\] \[menshen.engine\] engine ready\s", lines[0])
    assert "url=http://127.0.0.1:8001" in lines[0]
    assert "Uvicorn running on http://127.0.0.1:8080" in lines[1]
    assert "color_message" not in plain
    assert "[warning" in lines[2]
    for secret in (JWT[:30], CLIENT_SECRET):
        assert secret not in text
    assert "[REDACTED LENGTH=" in lines[0]
    assert "[REDACTED LENGTH=" in lines[2]


def test_not_a_terminal_gets_json_lines_without_color_message() -> None:
    text = _render(io.StringIO(), None)
    records = [json.loads(line) for line in text.splitlines()]
    assert [r["event"] for r in records][:2] == ["engine ready", "Uvicorn running on http://127.0.0.1:8080"]
    assert len(records) == 3
    assert all("color_message" not in r for r in records)
    assert not _ANSI.search(text)
    assert str(records[0]["authorization"]).startswith("[REDACTED")
    assert CLIENT_SECRET not in text and JWT[:30] not in text


def test_an_event_of_several_lines_ends_with_its_own_last_line() -> None:
    stream = io.StringIO()
    with saved_logging():
        configure_logging("INFO", json=False, stream=stream)
        get_logger("menshen.engine").error("engine failed; last lines:\n  one\n  two")
    assert stream.getvalue().splitlines()[1:] == ["  one", "  two"]


def test_explicit_choice_overrides_the_terminal_check() -> None:
    forced_json = _render(_Terminal(), True)
    assert json.loads(forced_json.splitlines()[0])["logger"] == "menshen.engine"
    plain = _render(io.StringIO(), False)
    assert not _ANSI.search(plain)  # readable, but no colours off a terminal
    assert plain.splitlines()[0].split(" ", 1)[1].startswith("[info     ] [menshen.engine] engine ready")
    assert CLIENT_SECRET not in plain
