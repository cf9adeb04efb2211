"""Test doubles that speak real protocols over real sockets: the fake vLLM engine.

Names are re-exported lazily, so that ``python -m tests.fakes.engine`` does not import its own module twice.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.fakes import wire
    from tests.fakes.engine import DEFAULT_MODEL, FakeEngine
    from tests.fakes.generation import RequestRecord
    from tests.fakes.script import Piece, Script, ToolCallPiece

_WHERE = {
    "DEFAULT_MODEL": "tests.fakes.engine",
    "FakeEngine": "tests.fakes.engine",
    "RequestRecord": "tests.fakes.generation",
    "Piece": "tests.fakes.script",
    "Script": "tests.fakes.script",
    "ToolCallPiece": "tests.fakes.script",
}


def __getattr__(name: str) -> Any:
    if name == "wire":
        return importlib.import_module("tests.fakes.wire")
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(name)


__all__ = ["DEFAULT_MODEL", "FakeEngine", "Piece", "RequestRecord", "Script", "ToolCallPiece", "wire"]
