from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.normalizer import shared_normalizer as default_normalizer


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ＦＯＲＢＩＤＤＥＮ", "forbidden"),  # full-width
        ("ⓕⓞⓡⒷⒾⒹ", "forbid"),  # circled letters (symbols whose compatibility form is a letter)
        ("for\u200bbid\u200dden\u00ad", "forbidden"),  # zero-width space/joiner, soft hyphen
        ("\ufefffor\u2060bid\u2062den\u202e", "forbidden"),  # BOM, word joiner, invisible times, bidi
        ("FoRbIdDeN", "forbidden"),
        ("fоrbіddеn", "forbidden"),  # Cyrillic о, і, е
        ("ΑΡΡLΕ", "apple"),  # Greek capitals
        ("機密資料", "机密资料"),  # traditional → simplified
        ("禁 词，示￥例", "禁词示例"),  # separators removed
        ("café", "cafe"),
        ("ﬁne", "fine"),  # expands: one original character, two normalised
    ],
)
def test_normalised_text(text: str, expected: str) -> None:
    assert default_normalizer().normalize(text).text == expected


def test_words_and_text_normalise_identically() -> None:
    norm = default_normalizer()
    for text in ["禁 词 示 例", "Ｆorbidden-Demo", "機\u200b密"]:
        assert norm.word(text) == norm.normalize(text).text


@pytest.mark.parametrize(
    "text", ["ab，，cd", "\u200bＡＢ cd", "ﬁx y", "禁\u200b 词 😀 x", "x" * 5 + "；" * 3 + "机密"]
)
def test_offsets_map_back_to_the_original_characters(text: str) -> None:
    norm = default_normalizer()
    result = norm.normalize(text)
    for i, ch in enumerate(result.text):
        start, end = result.span(i, i + 1)
        assert end == start + 1
        assert ch in norm.char(text[start]), (i, ch, text[start])


def test_gaps_count_separators_but_not_invisible_characters() -> None:
    result = default_normalizer().normalize("a \u200b,b\u200bc")
    assert result.text == "abc"
    assert [result.gap(i) for i in range(4)] == [0, 2, 0, 0]


ALPHABET = "ab禁词 ，\u200b\u00adＡ機😀\x01\x02é"


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=ALPHABET, max_size=1500))
def test_fast_map_agrees_with_the_explicit_map(text: str) -> None:
    """The block-indexed map of the C-speed paths equals a character-by-character map."""
    norm = default_normalizer()
    fast = norm.normalize(text)
    slow = norm._expanding(text)
    assert fast.text == slow.text
    for n in range(len(fast.text)):
        assert fast.orig(n) == slow.orig(n)
    for n in range(len(fast.text) + 1):
        assert fast.gap(n) == slow.gap(n)
