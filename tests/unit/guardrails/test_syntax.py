"""Pattern syntax: start characters, and which patterns partial matching judges soundly (checked here)."""

from __future__ import annotations

import itertools

import pytest
import regex
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.guardrails.patterns import compile_pattern
from gateway.guardrails.syntax import Syntax, read_syntax
from tests.support.guardrails import DEFAULT_BUNDLE


@pytest.mark.parametrize(
    ("pattern", "syntax"),
    [
        (r"[1-9](?<![0-9A-Za-z][1-9])\d{5}", Syntax("[1-9]", partial=True)),
        (r"(?<![0-9])(?:\+?86[ -]?)?1[3-9]\d{9}(?![0-9])", Syntax(r"\+|8|1", partial=True)),
        (r"(?<=@)[a-z]{2,5}|x", Syntax("[a-z]|x", partial=True)),
        (r"\p{Han}{2}", Syntax(r"\p{Han}", partial=True)),
        (r"[]a]b", Syntax("[]a]", partial=True)),
        (r"(?:ab)?c", Syntax("a|c", partial=True)),
        (r"x.", Syntax("x", partial=True)),
        (r".x", Syntax(None, partial=True)),  # any character can start it
        (r"a*", Syntax(None, partial=False)),  # matches the empty string
        (r"\bfoo\b", Syntax("f", partial=False)),  # word boundaries at the end are not reported
        (r"ab$", Syntax("a", partial=False)),
        (r"a\Z", Syntax("a", partial=False)),
        (r"a+?b", Syntax("a", partial=False)),  # lazy
        (r"a++b", Syntax("a", partial=False)),  # possessive
        (r"(?>ab)c", Syntax("a", partial=False)),  # atomic
        (r"(a)b", Syntax("a", partial=False)),  # capturing
        (r"[a-z]{2}(?<=x)", Syntax("[a-z]", partial=False)),  # a look-behind after a repeat
        (r"(a)\1", Syntax(None, partial=False)),  # back-reference: outside the subset
        (r"(?i)abc", Syntax(None, partial=False)),  # inline flags
        (r"abc{e<=1}", Syntax(None, partial=False)),  # fuzzy
        (r"[[:alpha:]]", Syntax(None, partial=False)),
    ],
)
def test_read_syntax(pattern: str, syntax: Syntax) -> None:
    assert read_syntax(pattern) == syntax


def test_default_patterns_are_judged_by_partial_matching() -> None:
    rules = yaml.safe_load((DEFAULT_BUNDLE / "guardrails.yaml").read_text(encoding="utf-8"))["rules"]
    patterns = [r["pattern"] for r in rules if r["kind"] == "pattern"]
    assert patterns
    assert all(read_syntax(p).partial and read_syntax(p).starts for p in patterns)


# --- soundness of partial matching, against every short continuation --------------------------------

ALPHABET = ["a", "b", "1", " "]
CONTINUATIONS = ["", *("".join(t) for k in (1, 2, 3) for t in itertools.product(ALPHABET, repeat=k))]
ATOMS = ["a", "b", "1", "[ab]", r"\d", r"\w", r"\s", " ", "[^a]", "."]
QUANTIFIERS = ["?", "*", "+", "{2}", "{1,2}", "{0,2}", "{2,}", "??", "*+", "+?"]
ASSERTIONS = ["^", r"\A", r"\b", r"\B", "$", r"\Z"]


def _pattern() -> st.SearchStrategy[str]:
    def extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        return st.one_of(
            st.tuples(inner, inner).map("".join),
            st.tuples(inner, inner).map(lambda t: f"(?:{t[0]}|{t[1]})"),
            st.tuples(inner, st.sampled_from(QUANTIFIERS)).map(lambda t: f"(?:{t[0]}){t[1]}"),
            st.tuples(st.sampled_from(["(?=", "(?!", "(?<=", "(?<!", "(?>", "("]), inner).map(
                lambda t: f"{t[0]}{t[1]})"
            ),
        )

    leaf = st.one_of(st.sampled_from(ATOMS), st.sampled_from(ASSERTIONS))
    return st.recursive(leaf, extend, max_leaves=4)


def _span(m: regex.Match[str] | None) -> tuple[int, int] | None:
    return None if m is None else m.span()


@settings(max_examples=1000, deadline=None)
@given(pattern=_pattern(), text=st.text(alphabet="".join(ALPHABET), max_size=6), ignore_case=st.booleans())
def test_partial_matching_is_sound_where_the_syntax_says_so(
    pattern: str, text: str, ignore_case: bool
) -> None:
    """`patterns.advance` relies on this: for a pattern read as sound, (1) a partial search answering None
    or a partial match at p means no position before p can ever start a match, and (2) no position before
    the leftmost partial match of ``reach`` can change its match with more text."""
    # without the load-time cost probe, whose verdict depends on timing: soundness is what is tested here
    compiled = compile_pattern(0, pattern, ignore_case, None, probe_reach=False)
    if compiled.reach is None:
        assert not read_syntax(pattern).partial
        return
    probe = compiled.regex.search(text, partial=True)
    if probe is None or probe.partial:
        stop = len(text) if probe is None else probe.start()
        assert all(compiled.regex.match(text + c, p) is None for p in range(stop) for c in CONTINUATIONS)
    hold = compiled.reach.search(text, partial=True)
    for p in range(len(text) if hold is None else hold.start()):
        now = _span(compiled.regex.match(text, p))
        assert all(_span(compiled.regex.match(text + c, p)) == now for c in CONTINUATIONS)
