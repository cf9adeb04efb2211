"""Vectors as float32 blobs and cosine ranking, in plain Python: a handbook is a few hundred chunks."""

from __future__ import annotations

import math
import sys
from array import array
from collections.abc import Sequence


def normalised(vector: Sequence[float]) -> list[float]:
    """``vector`` scaled to unit length, so that cosine similarity is a dot product (0 for a zero vector)."""
    norm = math.sqrt(math.fsum(x * x for x in vector)) or 1.0
    return [x / norm for x in vector]


def to_blob(vector: Sequence[float]) -> bytes:
    """Little-endian float32, whatever the machine, so that a database file travels."""
    values = array("f", vector)
    if sys.byteorder == "big":
        values.byteswap()
    return values.tobytes()


def from_blob(blob: bytes) -> array[float]:
    values = array("f")
    values.frombytes(blob)
    if sys.byteorder == "big":
        values.byteswap()
    return values


def dot(a: Sequence[float], b: Sequence[float]) -> float:
    return math.fsum(x * y for x, y in zip(a, b, strict=True))
