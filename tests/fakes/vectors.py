"""Deterministic embeddings for the fake engine: a unit vector seeded by the text's hash."""

from __future__ import annotations

import base64
import hashlib
import math
import random
import struct


def embed(text: str, dim: int, dimensions: int | None = None) -> list[float]:
    """The text's vector, cut to ``dimensions`` and renormalised (Matryoshka-style), in float32 precision."""
    rng = random.Random(hashlib.sha256(text.encode()).digest())
    vector = [rng.gauss(0.0, 1.0) for _ in range(dim)][: dimensions or dim]
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    # through float32, as vLLM's tensors are: float and base64 answers then carry the same numbers
    packed = struct.pack(f"<{len(vector)}f", *(x / norm for x in vector))
    return list(struct.unpack(f"<{len(vector)}f", packed))


def to_base64(vector: list[float]) -> str:
    """Little-endian float32 bytes, base64: what vLLM sends and the openai SDK decodes."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


__all__ = ["embed", "to_base64"]
