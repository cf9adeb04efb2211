"""SSE framing and the incremental decoder, across every read boundary."""

from __future__ import annotations

import pytest

from gateway.protocol import DONE, SSEDecoder, frame

EVENTS = [b'{"a":1}', b'{"text":"\xe4\xbd\xa0\xe5\xa5\xbd"}', b"[DONE]"]
STREAM = b"".join(frame(e) for e in EVENTS)


def feed_all(pieces: list[bytes]) -> tuple[list[bytes], SSEDecoder]:
    decoder = SSEDecoder()
    out: list[bytes] = []
    for piece in pieces:
        out += decoder.feed(piece)
    return out, decoder


def test_frame_and_done() -> None:
    assert frame(b'{"x":1}') == b'data: {"x":1}\n\n'
    assert DONE == b"data: [DONE]\n\n"


def test_one_read_with_every_event() -> None:
    out, decoder = feed_all([STREAM])
    assert out == EVENTS
    assert not decoder.pending


@pytest.mark.parametrize(
    "stream",
    [STREAM, STREAM.replace(b"\n", b"\r\n"), STREAM.replace(b"\n", b"\r")],
    ids=["lf", "crlf", "cr"],
)
def test_split_at_every_byte_position(stream: bytes) -> None:
    for cut in range(len(stream) + 1):
        out, decoder = feed_all([stream[:cut], stream[cut:]])
        assert out == EVENTS, cut
        assert not decoder.pending


@pytest.mark.parametrize(
    "stream",
    [STREAM, STREAM.replace(b"\n", b"\r\n"), STREAM.replace(b"\n", b"\r")],
    ids=["lf", "crlf", "cr"],
)
def test_one_byte_at_a_time(stream: bytes) -> None:
    out, _ = feed_all([stream[i : i + 1] for i in range(len(stream))])
    assert out == EVENTS


def test_crlf_in_one_read() -> None:
    out, _ = feed_all([STREAM.replace(b"\n", b"\r\n")])
    assert out == EVENTS


def test_crlf_terminator_split_after_a_complete_event() -> None:
    out, decoder = feed_all([b"data: a\r\n\r\ndata: b\r\n\r", b"\n"])
    assert out == [b"a", b"b"]
    assert not decoder.pending


def test_a_lone_lf_after_a_crlf_split_across_reads_still_counts() -> None:
    # CR | LF | LF: the first LF completes the CRLF, the second ends the event.
    out, decoder = feed_all([b"data: a\r", b"\n", b"\n"])
    assert out == [b"a"]
    assert not decoder.pending


def test_events_are_released_as_soon_as_complete() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: one\n") == []
    assert decoder.pending
    assert decoder.feed(b"\ndata: tw") == [b"one"]
    assert decoder.pending
    assert decoder.feed(b"o\n\n") == [b"two"]
    assert not decoder.pending


def test_comments_and_events_without_data_are_skipped() -> None:
    out, _ = feed_all([b": ping\n\nevent: keepalive\n\nid: 3\ndata: x\n\n:comment\ndata: y\n\n"])
    assert out == [b"x", b"y"]


def test_multi_line_data_is_joined_with_newlines() -> None:
    out, _ = feed_all([b"data: first\ndata: second\ndata:third\n\n"])
    assert out == [b"first\nsecond\nthird"]


def test_space_after_colon_is_optional() -> None:
    out, _ = feed_all([b"data:[DONE]\n\n"])
    assert out == [b"[DONE]"]


def test_an_unterminated_tail_stays_pending() -> None:
    out, decoder = feed_all([STREAM + b"data: partial"])
    assert out == EVENTS
    assert decoder.pending


def test_blank_tail_is_not_pending() -> None:
    _, decoder = feed_all([STREAM + b"\n"])
    assert not decoder.pending
