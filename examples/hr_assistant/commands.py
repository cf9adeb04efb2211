"""The two commands: ``ingest`` a handbook directory into the index, ``ask`` a question of it."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from examples.hr_assistant import answer
from examples.hr_assistant.chunking import read_handbook
from examples.hr_assistant.menshen import Menshen
from examples.hr_assistant.store import Index


@dataclass(frozen=True, slots=True)
class Models:
    chat: str
    embedding: str


def ingest(
    menshen: Menshen, index: Index, models: Models, directory: Path, batch_size: int, out: TextIO
) -> int:
    chunks = read_handbook(directory)
    vectors = menshen.embed(models.embedding, [c.embedding_text() for c in chunks], batch_size)
    index.replace(models.embedding, chunks, vectors)
    sections = len({c.section for c in chunks})
    print(f"indexed {len(chunks)} chunks of {sections} sections into {index.path}", file=out)
    return 0


def ask(
    menshen: Menshen,
    index: Index,
    models: Models,
    question: str,
    *,
    k: int,
    max_tokens: int,
    as_json: bool,
    out: TextIO,
    err: TextIO = sys.stderr,
) -> int:
    (query,) = menshen.embed(models.embedding, [question])
    hits = index.search(models.embedding, query, k)
    chunks = menshen.stream_chat(models.chat, answer.messages(question, hits), max_tokens)

    def show(text: str) -> None:
        if not as_json:
            out.write(text)
            out.flush()

    text, stopped = answer.read_stream(chunks, show)
    result = answer.Answer(text, answer.sources(hits), stopped)
    if stopped is not None:
        print(f"hr-assistant: {answer.NOTICES[stopped]}", file=err, flush=True)
    if as_json:
        json.dump(result.to_json(), out, ensure_ascii=False)
        out.write("\n")
        return 0
    out.write("\n\nSources:\n")
    for source in result.sources:
        out.write(f"  {source.score:.3f}  {source.id}  {source.title}\n")
    return 0
