"""Handbook sections split into chunks: by heading and paragraph, each at most ``max_chars`` characters."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

DEFAULT_MAX_CHARS: Final = 800
# The handbook's README describes the data set; it is not a section.
_NOT_SECTIONS: Final = frozenset({"readme"})
# A sentence end in English or Chinese, where an over-long paragraph may be cut.
_SENTENCE_END: Final = re.compile(r"(?<=[.!?。！？；;])\s*")


@dataclass(frozen=True, slots=True)
class Chunk:
    section: str  # the file name without ``.md``
    title: str  # the section's first heading
    text: str

    def embedding_text(self) -> str:
        # The title carries the topic words a paragraph often leaves implicit.
        return f"{self.title}\n\n{self.text}"


class HandbookError(Exception):
    """The handbook directory holds no usable section."""


def read_handbook(directory: Path, max_chars: int = DEFAULT_MAX_CHARS) -> list[Chunk]:
    """Every chunk of every ``*.md`` section in ``directory``, sections in name order."""
    if not directory.is_dir():
        raise HandbookError(f"{directory} is not a directory")
    files = sorted(p for p in directory.glob("*.md") if p.stem.lower() not in _NOT_SECTIONS)
    chunks = [c for path in files for c in split_section(path.stem, path.read_text("utf-8"), max_chars)]
    if not chunks:
        raise HandbookError(f"no handbook section (*.md with text) in {directory}")
    return chunks


def split_section(section: str, markdown: str, max_chars: int = DEFAULT_MAX_CHARS) -> list[Chunk]:
    """Chunks of one section: a heading starts a new chunk; paragraphs are packed up to ``max_chars``."""
    title = section
    blocks: list[list[str]] = [[]]  # paragraphs grouped under their heading
    for paragraph in _paragraphs(markdown):
        if paragraph.startswith("#"):
            heading = paragraph.lstrip("#").strip()
            if paragraph.startswith("# ") and title == section:
                title = heading
            else:
                blocks.append([heading])
            continue
        blocks[-1].append(paragraph)
    texts = [t for block in blocks for t in _pack(block, max_chars)]
    return [Chunk(section, title, text) for text in texts]


def _paragraphs(markdown: str) -> list[str]:
    paragraphs: list[str] = []
    for raw in re.split(r"\n\s*\n", markdown):
        lines = [line.strip() for line in raw.strip().splitlines()]
        # A heading line glued to its paragraph is still a heading of its own.
        while lines and lines[0].startswith("#"):
            paragraphs.append(lines.pop(0))
        if lines:
            paragraphs.append(_join_lines(lines))
    return paragraphs


def _join_lines(lines: list[str]) -> str:
    # Hard-wrapped Chinese lines join without a space; English ones with one.
    out = lines[0]
    for line in lines[1:]:
        cjk = out and ord(out[-1]) > 0x2E7F and ord(line[0]) > 0x2E7F
        out += line if cjk else " " + line
    return out


def _pack(paragraphs: list[str], max_chars: int) -> list[str]:
    pieces = [piece for p in paragraphs for piece in _cut(p, max_chars)]
    chunks: list[str] = []
    for piece in pieces:
        if chunks and len(chunks[-1]) + 2 + len(piece) <= max_chars:
            chunks[-1] += "\n\n" + piece
        else:
            chunks.append(piece)
    return chunks


def _cut(paragraph: str, max_chars: int) -> list[str]:
    """A paragraph in pieces of at most ``max_chars``: at sentence ends, else hard."""
    if len(paragraph) <= max_chars:
        return [paragraph]
    pieces: list[str] = []
    current = ""
    for sentence in (s for s in _SENTENCE_END.split(paragraph) if s):
        while len(sentence) > max_chars:
            pieces.append(sentence[:max_chars])
            sentence = sentence[max_chars:]
        if current and len(current) + 1 + len(sentence) > max_chars:
            pieces.append(current)
            current = sentence
        else:
            current = f"{current} {sentence}" if current else sentence
    if current:
        pieces.append(current)
    return pieces
