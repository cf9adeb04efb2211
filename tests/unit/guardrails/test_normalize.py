from __future__ import annotations

import pytest

from gateway.guardrails import default_normalizer


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


@pytest.mark.parametrize("text", ["ab，，cd", "\u200bＡＢ cd", "ﬁx y", "禁\u200b 词 😀 x", "x" * 5 + "；" * 3 + "机密"])
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
