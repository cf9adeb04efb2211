"""What every answer of the gateway must be, whatever it was sent: the fuzz's one assertion."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

# Python's own words: a traceback, a frame line, or the name of a built-in exception class.
PYTHON_LEAK = re.compile(
    rb"Traceback \(most recent call last\)|File \"[^\"]+\", line \d+|"
    rb"\b(?:Key|Type|Value|Attribute|Index|Name|Lookup|Runtime|Assertion|Unicode\w*|Recursion|Overflow)Error\b"
)
# Routes whose errors follow RFC 6749 §5.2 ({"error": "<code>", "error_description": ...}), not OpenAI's.
OAUTH_PATHS = ("/oauth/token",)


@dataclass(frozen=True, slots=True)
class Answer:
    """One HTTP response as the client saw it."""

    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes


def check_answer(answer: Answer, path: str, *, head: bool = False) -> None:
    """Raise AssertionError when ``answer`` breaks the gateway's contract for bad input.

    ``head``: the answer to a HEAD request, whose headers describe a body that is not sent.
    """
    assert answer.status < 500 or answer.status == 503, f"{answer.status} on {path}: {answer.body[:300]!r}"
    if answer.status == 503:
        assert int(answer.headers.get("retry-after", "0")) >= 1, f"503 without Retry-After on {path}"
    leak = PYTHON_LEAK.search(answer.body)
    assert leak is None, f"Python text {leak.group(0)!r} in the answer on {path}: {answer.body[:300]!r}"
    content_type = answer.headers.get("content-type", "")
    if answer.status >= 400 and not head and content_type.startswith("application/json"):
        check_error_body(answer.body, path)


def check_error_body(body: bytes, path: str) -> None:
    document = json.loads(body)
    assert isinstance(document, dict), f"error body on {path} is not an object: {body[:300]!r}"
    error = document.get("error")
    if path.split("?")[0] in OAUTH_PATHS and isinstance(error, str):
        assert isinstance(document.get("error_description", ""), str)
        return
    assert isinstance(error, dict), f"not the OpenAI error shape on {path}: {body[:300]!r}"
    assert isinstance(error.get("message"), str) and error["message"], body[:300]
    assert isinstance(error.get("type"), str) and error["type"], body[:300]
    assert "param" in error and "code" in error, body[:300]


def check_logs(text: str) -> None:
    leak = PYTHON_LEAK.search(text.encode("utf-8", "replace"))
    assert leak is None, f"Python exception text in the gateway's logs: {leak.group(0)!r}"


__all__ = ["OAUTH_PATHS", "PYTHON_LEAK", "Answer", "check_answer", "check_error_body", "check_logs"]
