"""How a settings field names its command-line flag and ``GATEWAY_*`` variable.

Section models (``gateway.auth.config``, ``gateway.ratelimit``, ``gateway.settings``) mark fields with
``option("name")``; ``gateway.settings`` turns every marked field into ``--name`` and ``GATEWAY_NAME``.
"""

from __future__ import annotations

from typing import Any, Final

OPTION_KEY: Final = "option"


def option(name: str) -> dict[str, Any]:
    """Field metadata (``json_schema_extra``): the setting's flag ``--name`` and variable ``GATEWAY_NAME``."""
    return {OPTION_KEY: name}


__all__ = ["OPTION_KEY", "option"]
