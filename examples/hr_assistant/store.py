"""The local index: chunks and their unit-length embeddings in one SQLite file.

Vectors are float32 blobs (``vectors.to_blob``). ``replace`` swaps the whole index in one transaction, so a
failed re-ingest leaves the previous one in place.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from examples.hr_assistant.chunking import Chunk
from examples.hr_assistant.vectors import dot, from_blob, normalised, to_blob

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY,
    section TEXT NOT NULL,
    title TEXT NOT NULL,
    text TEXT NOT NULL,
    vector BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class IndexProblem(Exception):
    """The index is missing, empty, or was built with another embedding model."""


@dataclass(frozen=True, slots=True)
class Hit:
    chunk: Chunk
    score: float


class Index:
    def __init__(self, path: Path) -> None:
        self.path = path

    def replace(self, model: str, chunks: Sequence[Chunk], vectors: Sequence[Sequence[float]]) -> None:
        if len(chunks) != len(vectors):
            raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(sqlite3.connect(self.path)) as db, db:
            db.executescript(_SCHEMA)
            db.execute("DELETE FROM chunks")
            db.execute("DELETE FROM meta")
            db.executemany(
                "INSERT INTO chunks (section, title, text, vector) VALUES (?, ?, ?, ?)",
                [
                    (c.section, c.title, c.text, to_blob(normalised(v)))
                    for c, v in zip(chunks, vectors, strict=True)
                ],
            )
            db.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [("embedding_model", model), ("dimensions", str(len(vectors[0]) if vectors else 0))],
            )

    def search(self, model: str, query: Sequence[float], k: int) -> list[Hit]:
        """The ``k`` chunks most similar to ``query`` (cosine), best first."""
        if not self.path.is_file():
            raise IndexProblem(f"no index at {self.path}; run `ingest` first")
        with closing(sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)) as db:
            try:
                meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
                rows = db.execute("SELECT section, title, text, vector FROM chunks").fetchall()
            except sqlite3.DatabaseError as exc:
                raise IndexProblem(f"{self.path} is not an index of this app ({exc})") from exc
        if not rows:
            raise IndexProblem(f"the index at {self.path} is empty; run `ingest` first")
        if meta.get("embedding_model") != model:
            raise IndexProblem(
                f"the index at {self.path} was built with {meta.get('embedding_model')!r}, not {model!r}; "
                "run `ingest` again"
            )
        unit = normalised(query)
        if len(unit) != int(meta["dimensions"]):
            raise IndexProblem(f"the query has {len(unit)} dimensions, the index {meta['dimensions']}")
        hits = [Hit(Chunk(s, t, x), dot(unit, from_blob(v))) for s, t, x, v in rows]
        hits.sort(key=lambda h: h.score, reverse=True)
        return hits[:k]
