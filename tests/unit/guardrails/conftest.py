"""Fixtures for the word and pattern matcher tests: small bundles built in code, and the default bundle."""

from __future__ import annotations

import pytest

from gateway.guardrails import (
    CompiledGuardrails,
    Normalizer,
    compile_guardrails,
)
from gateway.policy.loader import load_bundle
from tests.support.guardrails import DEFAULT_BUNDLE, Build, build_guardrails
from tests.support.normalizer import shared_normalizer


@pytest.fixture
def build() -> Build:
    return build_guardrails


@pytest.fixture(scope="session")
def default_guardrails() -> CompiledGuardrails:
    return compile_guardrails(load_bundle(DEFAULT_BUNDLE).bundle, shared_normalizer())


@pytest.fixture
def norm() -> Normalizer:
    return shared_normalizer()
