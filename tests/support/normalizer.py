"""One text normaliser for the whole test session, as the app keeps one for its process."""

from __future__ import annotations

import functools

from gateway.guardrails import Normalizer


@functools.cache
def shared_normalizer() -> Normalizer:
    return Normalizer()


__all__ = ["shared_normalizer"]
