"""Shared test helpers (moved out of tests/unit/fakes/conftest.py)."""

from __future__ import annotations

from tests.fakes import Script

MODEL = "Qwen/Qwen3-8B"


HELLO = Script.of(content="Hello there, friend.", reasoning="The user greets me.")
