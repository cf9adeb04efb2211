"""Hypothesis strategies over the request schema of ``gateway/protocol/requests.py``.

A body starts valid-ish (the accepted fields with values in and around their ranges), then one or more
mutations break it: a wrong type in a field, a field removed, an unknown field, an unknown content part,
huge numbers, NaN and Infinity, lone surrogates, NUL bytes, long arrays, deep nesting; and, on the encoded
bytes, duplicate keys, invalid UTF-8 and truncation. Bodies are bytes: JSON text a client library would
never write is the point.
"""

from __future__ import annotations

import json
import re
from typing import Any

from hypothesis import strategies as st

MODEL = "qwen3-8b"

# Values that are wrong for most fields, and awkward for the rest.
ODD_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([2**63, -(2**63) - 1, 10**400, 0, -1, 1e308, -0.0, 5e-324]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(["\ud800", "\udfff", "\x00", "a\x00b", "\u202e", "\ufeff", "🙂" * 10]),
)
JSON_VALUES = st.recursive(
    ODD_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)

_SAMPLING: dict[str, st.SearchStrategy[Any]] = {
    "max_tokens": st.integers(min_value=1, max_value=64),
    "temperature": st.floats(min_value=0.0, max_value=2.0),
    "top_p": st.floats(min_value=0.01, max_value=1.0),
    "top_k": st.integers(min_value=-1, max_value=100),
    "min_p": st.floats(min_value=0.0, max_value=1.0),
    "presence_penalty": st.floats(min_value=-2.0, max_value=2.0),
    "frequency_penalty": st.floats(min_value=-2.0, max_value=2.0),
    "repetition_penalty": st.floats(min_value=0.1, max_value=2.0),
    "stop": st.one_of(st.text(max_size=8), st.lists(st.text(max_size=8), max_size=3)),
    "seed": st.integers(min_value=-(2**63), max_value=2**63 - 1),
    "n": st.just(1),
    "stream": st.booleans(),
    "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
    "user": st.text(max_size=20),
}

_CONTENT = st.one_of(
    st.text(max_size=60),
    st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=30)}), max_size=3),
    st.none(),
)
_MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "developer", "user", "assistant"]), "content": _CONTENT},
    optional={"name": st.text(max_size=10)},
)


def _with_optional(required: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(required, optional=_SAMPLING)


def chat_bodies() -> st.SearchStrategy[dict[str, Any]]:
    return _with_optional(
        {
            "model": st.sampled_from([MODEL, MODEL, "qwen3-unknown", ""]),
            "messages": st.lists(_MESSAGE, min_size=1, max_size=3),
        }
    ).flatmap(
        lambda body: st.fixed_dictionaries(
            {},
            optional={
                "max_completion_tokens": st.integers(min_value=1, max_value=64),
                "chat_template_kwargs": st.fixed_dictionaries({"enable_thinking": st.booleans()}),
            },
        ).map(lambda extra: {**body, **extra})
    )


def completion_bodies() -> st.SearchStrategy[dict[str, Any]]:
    return _with_optional(
        {
            "model": st.sampled_from([MODEL, MODEL, "qwen3-unknown"]),
            "prompt": st.one_of(st.text(max_size=60), st.lists(st.text(max_size=20), min_size=1, max_size=1)),
        }
    )


# Deep nesting is spliced into the encoded text: the encoder would recurse as deep as the value.
_DEEP = re.compile(rb'"@deep:(\d+)@"')


def _nested(match: re.Match[bytes]) -> bytes:
    depth = int(match.group(1))
    return b'{"k":[' * depth + b'"deep"' + b"]}" * depth


def _mutate_dict(draw: st.DrawFn, body: dict[str, Any]) -> dict[str, Any]:
    """One structural mutation of the decoded body."""
    body = dict(body)
    keys = sorted(body)
    kind = draw(
        st.sampled_from(
            ["wrong_type", "missing", "unknown_field", "unknown_part", "huge_array", "deep", "odd_message"]
        )
    )
    if kind == "wrong_type" and keys:
        body[draw(st.sampled_from(keys))] = draw(JSON_VALUES)
    elif kind == "missing" and keys:
        del body[draw(st.sampled_from(keys))]
    elif kind == "unknown_field":
        name = draw(st.sampled_from(["chat_template", "vllm_xargs", "tools", "logprobs", "guided_json"]))
        body[draw(st.one_of(st.just(name), st.text(max_size=12)))] = draw(JSON_VALUES)
    elif kind == "unknown_part":
        part_type = draw(st.sampled_from(["image_url", "input_audio", "file", "refusal", "", "TEXT"]))
        part = {"type": part_type, "text": "x", "image_url": {"url": "data:,x"}}
        body["messages"] = [{"role": "user", "content": [part]}]
    elif kind == "huge_array":
        field = draw(st.sampled_from(["messages", "stop", "prompt"]))
        item: Any = {"role": "user", "content": "x"} if field == "messages" else "x"
        body[field] = [item] * draw(st.sampled_from([0, 17, 1000, 20_000]))
    elif kind == "deep":
        body[draw(st.sampled_from([*keys, "extra"]))] = f"@deep:{draw(st.sampled_from([50, 500, 3000]))}@"
    elif kind == "odd_message":
        body["messages"] = draw(st.lists(JSON_VALUES, min_size=1, max_size=3))
    return body


def _encode(value: Any) -> bytes:
    # allow_nan writes NaN/Infinity tokens; ensure_ascii keeps lone surrogates as \\udXXX escapes.
    return json.dumps(value, allow_nan=True, ensure_ascii=True).encode()


def _mutate_bytes(draw: st.DrawFn, data: bytes) -> bytes:
    """One mutation of the encoded JSON text."""
    kind = draw(
        st.sampled_from(["duplicate_key", "bad_utf8", "raw_nul", "truncate", "raw_surrogate", "not_json"])
    )
    if kind == "duplicate_key" and data.startswith(b"{") and len(data) > 2:
        key = draw(st.sampled_from([b'"model"', b'"messages"', b'"stream"', b'"max_tokens"']))
        return b"{" + key + b":" + _encode(draw(JSON_VALUES)) + b"," + data[1:]
    if kind == "bad_utf8":
        at = draw(st.integers(min_value=0, max_value=len(data)))
        junk = draw(
            st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80"])
        )
        return data[:at] + junk + data[at:]
    if kind == "raw_nul":
        at = draw(st.integers(min_value=0, max_value=len(data)))
        return data[:at] + b"\x00" + data[at:]
    if kind == "truncate":
        return data[: draw(st.integers(min_value=0, max_value=max(0, len(data) - 1)))]
    if kind == "raw_surrogate":
        return data.replace(b'"user"', b'"\\ud800user"', 1).replace(b'"x', b'"\\udc00', 1)
    return draw(
        st.sampled_from([b"", b"null", b"[]", b"1e999999", b"-", b"{", b'"', b"\xef\xbb\xbf{}", b"{}"])
    )


@st.composite
def fuzzed_bodies(draw: st.DrawFn, base: st.SearchStrategy[dict[str, Any]]) -> bytes:
    """A body from ``base``, mutated zero to three times, as the bytes sent."""
    body = draw(base)
    for _ in range(draw(st.integers(min_value=0, max_value=2))):
        body = _mutate_dict(draw, body)
    data = _DEEP.sub(_nested, _encode(body))
    if draw(st.integers(min_value=0, max_value=3)) == 0:
        data = _mutate_bytes(draw, data)
    return data


__all__ = ["JSON_VALUES", "MODEL", "chat_bodies", "completion_bodies", "fuzzed_bodies"]
