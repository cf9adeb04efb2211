"""The fuzz's bounds: its seed (``FUZZ_SEED`` when set, to replay a failure, else a fresh one, printed in
pytest's header) and the hypothesis settings every fuzz test starts from."""

from __future__ import annotations

import functools
import os
import secrets

from hypothesis import HealthCheck, settings

FUZZ = settings(
    deadline=None,
    database=None,  # replay is by seed, regressions are @example
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)


@functools.cache
def fuzz_seed() -> int:
    value = os.environ.get("FUZZ_SEED", "").strip()
    return int(value) if value else secrets.randbelow(2**32)


__all__ = ["FUZZ", "fuzz_seed"]
